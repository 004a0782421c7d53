//! What the `vmm` command shares with the other front ends (`vmm-bench`):
//! the process exit codes.

pub mod exit;
