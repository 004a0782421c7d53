//! Firecracker's REST API (its swagger file: `tests/fixtures/firecracker/`)
//! for the `vmm` library, over HTTP/1.1 on a Unix socket.
//!
//! Three parts: the server's thread (`server`) reads connections and
//! parses requests (`http`, `router`) without touching the VM; the front
//! end's thread carries the routed requests out (`controller`) in
//! `serve`, which also waits for the VM's end and the front end's stop
//! signal.

pub mod controller;
pub mod http;
pub mod router;
pub mod server;

use std::os::fd::RawFd;

pub use controller::{Controller, FrontEnd, NoPolicy};
pub use server::{bind, ApiServer, Options};

/// How `serve` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// The VM ended, this way.
    VmEnded(vmm::VmEnd),
    /// A stop signal came before any VM was started.
    Signalled(i32),
}

/// Carries out the server's requests on this thread until the VM ends or
/// `stop_fd` becomes readable (`take_stop` then says which signal came; a
/// running VM is stopped with it and torn down first).
pub fn serve(
    controller: &mut Controller,
    server: &ApiServer,
    stop_fd: Option<RawFd>,
    take_stop: &dyn Fn() -> Option<i32>,
) -> Served {
    loop {
        if let Some(end) = controller.ended() {
            return Served::VmEnded(end);
        }
        let mut fds = vec![libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&server.wake),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(fd) = stop_fd {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(h) = controller.handle() {
            fds.push(libc::pollfd {
                fd: h.ended_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: `fds` is a live array of pollfds for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue; // EINTR
        }
        if stop_fd.is_some() && fds[1].revents & libc::POLLIN != 0 {
            if let Some(sig) = take_stop() {
                match controller.handle() {
                    Some(h) => {
                        h.stop_with(vmm::VmEnd::Signal(sig));
                        return Served::VmEnded(h.wait());
                    }
                    None => return Served::Signalled(sig),
                }
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let _ = server.wake.read();
            while let Ok(job) = server.jobs.try_recv() {
                let response = controller.handle_request(job.request);
                let _ = job.reply.send(response);
            }
        }
    }
}
