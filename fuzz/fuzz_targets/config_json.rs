#![no_main]
//! Fuzz target `config_json`: see `vmm_tests::fuzz::config_json`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_tests::fuzz::config_json(data));
