#![no_main]
//! See `leadership_sim::fuzz::core_events`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    leadership_sim::fuzz::core_events(data);
});
