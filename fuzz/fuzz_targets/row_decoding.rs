#![no_main]
//! See `leadership_driver_testkit::fuzz_rows::row_decoding`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadership_driver_testkit::fuzz_rows::row_decoding(data));
