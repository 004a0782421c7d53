#![no_main]
//! Fuzz target `virtio_blk`: see `vmm_tests::fuzz::virtio_blk`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_tests::fuzz::virtio_blk(data));
