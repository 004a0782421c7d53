//! What the `vmm` command shares with the other front ends (`vmm-bench`):
//! the process exit codes; and with `vmm-runtime`, the terminal in raw
//! mode while a guest's console is on it.

pub mod exit;
pub mod terminal;
