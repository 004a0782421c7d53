#![no_main]
//! Fuzz target `kernel_image`: see `vmm_tests::fuzz::kernel_image`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_tests::fuzz::kernel_image(data));
