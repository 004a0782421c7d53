#![no_main]
//! Fuzz target `api_request`: see `vmm_tests::fuzz::api_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_tests::fuzz::api_request(data));
