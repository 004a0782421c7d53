#![no_main]
//! Fuzz target `snapshot_state`: see `vmm_tests::fuzz::snapshot_state`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_tests::fuzz::snapshot_state(data));
