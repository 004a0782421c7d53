//! `process.terminal`: the container's console on a new pseudo-terminal,
//! whose master goes to the caller's `--console-socket` as the runtime
//! spec says (one SCM_RIGHTS message, as runc sends it), and whose slave is
//! the VMM's stdin, stdout and stderr: the guest's serial console.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::error::{Error, Result};

/// A new pseudo-terminal: (master, slave).
pub fn openpty() -> Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the integers given; the
    // name, termios and winsize pointers may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(Error::io("cannot open a pseudo-terminal")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: openpty succeeded: both are new descriptors this process
    // owns from now on.
    Ok(unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
}

/// Sends `master` to the Unix socket at `socket`.
pub fn send_master(socket: &Path, master: &OwnedFd) -> Result<()> {
    use std::os::fd::AsRawFd;
    let conn = UnixStream::connect(socket).map_err(|e| Error::File {
        what: "console socket",
        path: socket.to_path_buf(),
        reason: e.to_string(),
    })?;
    conn.send_with_fd(&b"/dev/ptmx"[..], master.as_raw_fd())
        .map_err(|e| Error::io("cannot send the console to the console socket")(e.into()))?;
    Ok(())
}
