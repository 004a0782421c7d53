#![no_main]
//! Fuzz target `oci_config`: see `vmm_tests::fuzz::oci_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_tests::fuzz::oci_config(data));
