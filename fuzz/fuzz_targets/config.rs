#![no_main]
//! See `leadership_sim::fuzz::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadership_sim::fuzz::config(data));
