#![no_main]
//! Fuzz target `virtio_mmio`: see `vmm_tests::fuzz::virtio_mmio`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_tests::fuzz::virtio_mmio(data));
