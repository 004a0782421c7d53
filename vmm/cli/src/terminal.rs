//! The host terminal in raw mode while the guest's console is on it, and
//! restored when the VM ends, whatever way it ends.

/// Puts an interactive terminal on stdin into raw mode, so keys reach the
/// guest as typed; restores it when dropped.
pub struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    /// Raw mode when the VM's serial console is on this terminal.
    pub fn enter_if_console(handle: &vmm::VmHandle) -> Option<RawTerminal> {
        if handle.serial_on_stdio() {
            Self::enter()
        } else {
            None
        }
    }

    /// Puts stdin's terminal, if it is one, in raw mode.
    pub fn enter() -> Option<RawTerminal> {
        let fd = libc::STDIN_FILENO;
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(fd) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is a terminal and `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: fd is a terminal and `raw` a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read from the same terminal.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}
