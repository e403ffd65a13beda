#![no_main]
//! See `leadership_testkit::fuzz::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadership_testkit::fuzz::config(data));
