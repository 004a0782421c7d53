#![no_main]
//! Fuzz target `virtio_net`: see `vmm_tests::fuzz::virtio_net`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_tests::fuzz::virtio_net(data));
