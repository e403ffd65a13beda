#![no_main]
//! See `leadership_testkit::fuzz::row_decoding`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadership_testkit::fuzz::row_decoding(data));
