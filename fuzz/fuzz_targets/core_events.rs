#![no_main]
//! See `leadership_testkit::fuzz::core_events`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    leadership_testkit::fuzz::core_events(data);
});
