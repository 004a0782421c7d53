#![no_main]
//! Fuzz target `image_layer`: see `vmm_tests::fuzz::image_layer`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_tests::fuzz::image_layer(data));
