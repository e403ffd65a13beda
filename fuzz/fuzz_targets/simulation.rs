#![no_main]
//! See `leadership_sim::fuzz::simulation`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadership_sim::fuzz::simulation(data));
