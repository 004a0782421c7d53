//! `vmm-runtime`: an OCI runtime whose command line is runc's, so that
//! podman, containerd (its runc shim) and Kubernetes (a RuntimeClass) run
//! each container as a VM with its own kernel. See docs/oci-runtime.md.
//!
//! `create` reads the bundle (`bundle`), makes the VM's root disk from the
//! bundle's root directory (`disk`), and starts the container's VMM process
//! (`shim`), which boots the VM until the guest's init waits for its
//! command; `start` hands init the command; `kill` has init signal it;
//! the VMM process's exit code is the container's status. What the
//! runtime keeps of each container is in `state`.

pub mod bundle;
pub mod commands;
pub mod console;
pub mod disk;
pub mod error;
pub mod hooks;
pub mod net;
pub mod shim;
pub mod state;

pub use error::{Error, Result};
