#![no_main]
//! Fuzz target `overlay_header`: see `vmm_tests::fuzz::overlay_header`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_tests::fuzz::overlay_header(data));
