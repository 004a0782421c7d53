//! Seccomp filters per thread, installed before the guest runs: each thread
//! may make only the system calls its work needs. A forbidden call stops
//! the whole process at once with a message naming the call and
//! `11`; `--seccomp off` leaves the filters out (for
//! debugging).
//!
//! The vCPU threads run KVM_RUN and the device models the guest reaches by
//! port and MMIO exits (serial output, virtio register writes). The main
//! thread runs the event loop: virtio queues (disk and TAP I/O), stdin,
//! signals, and the teardown. Neither opens files, creates sockets,
//! starts processes or maps executable memory.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

type Result<T> = std::result::Result<T, SeccompError>;

/// Which thread a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    /// A vCPU thread.
    Vcpu,
    /// A VM's device event loop (`vmm-events`).
    EventLoop,
    /// A front end's main thread once the VM runs: it waits for the VM's
    /// end and for stop signals, serves the API's requests on the running
    /// VM (a disk's new backing file is opened here) and reads its own
    /// resources at the end.
    Main,
    /// The API server's thread: its socket's connections only.
    Api,
}

/// What every thread of a running VM needs: memory, locks, signals, its own
/// end, time, logging.
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_rt_sigreturn,
    // A call with a timeout that a signal or a tracer (strace -p)
    // interrupted goes on through this one.
    libc::SYS_restart_syscall,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_fcntl,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    // Rewriting the metrics file at the VM's end.
    libc::SYS_ftruncate,
    // virtio-net's TX completion timer.
    libc::SYS_timerfd_settime,
    libc::SYS_getrandom,
];

/// The vCPU threads' additions: a queue notification that KVM's ioeventfd
/// does not take (an odd width or value) reaches the device from here.
/// KVM_RUN; TUNSETOFFLOAD when the driver acknowledges features; kicking
/// the other vCPUs when this one ends the VM.
const VCPU: &[i64] = &[
    libc::SYS_ioctl,
    libc::SYS_tgkill,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fdatasync,
];

/// The event loop's additions: epoll, virtio-blk, kicking and joining
/// the vCPU threads.
const EVENT_LOOP: &[i64] = &[
    libc::SYS_ioctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_fdatasync,
    libc::SYS_fsync,
    libc::SYS_tgkill,
];

/// The API server's additions: accepting and serving its connections.
const API: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_shutdown,
];

/// A front end's main thread's additions to the event loop's: its wait
/// (`poll`), the API's requests on the running VM (a disk's new file
/// opened, a snapshot's files written and renamed into place), removing
/// the API socket, and reading its own resources at the end (and the
/// paths of GET /vm/config made absolute).
const MAIN: &[i64] = &[
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rt_sigaction,
    libc::SYS_openat,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
];

/// The system calls `thread` may make.
pub fn allowed(thread: Thread) -> Vec<i64> {
    let lists: &[&[i64]] = match thread {
        Thread::Vcpu => &[COMMON, VCPU],
        Thread::EventLoop => &[COMMON, EVENT_LOOP],
        Thread::Main => &[COMMON, EVENT_LOOP, MAIN],
        Thread::Api => &[COMMON, API],
    };
    lists.iter().flat_map(|l| l.iter()).copied().collect()
}

/// Failures building or installing the filters.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler refused the rules.
    #[error("cannot build the {thread:?} seccomp filter: {reason}")]
    Build {
        /// Whose filter.
        thread: Thread,
        /// seccompiler's message.
        reason: String,
    },
    /// The kernel refused the filter.
    #[error("cannot install the {thread:?} seccomp filter: {reason}")]
    Install {
        /// Whose filter.
        thread: Thread,
        /// seccompiler's message.
        reason: String,
    },
    /// The SIGSYS handler that names a forbidden call.
    #[error("cannot install the SIGSYS handler: {0}")]
    SigsysHandler(String),
}

/// The BPF program for `thread`: its calls allowed, any other one trapped
/// (SIGSYS).
pub fn program(thread: Thread) -> Result<BpfProgram> {
    let err = |reason: String| SeccompError::Build { thread, reason };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        allowed(thread).into_iter().map(|nr| (nr, vec![])).collect();
    // glibc grows a thread's malloc arena with mprotect: read-write or
    // no access, never executable.
    let prot = |value: u64| {
        SeccompCondition::new(2, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(|e| err(e.to_string()))
    };
    rules.insert(
        libc::SYS_mprotect,
        vec![
            prot((libc::PROT_READ | libc::PROT_WRITE) as u64)?,
            prot(libc::PROT_NONE as u64)?,
        ],
    );
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| err(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| err(e.to_string()))
}

/// Installs `thread`'s filter on the calling thread. A forbidden call
/// raises SIGSYS: its handler is the front end's to install
/// (`install_sigsys_handler`), else the process dies of the signal.
pub fn install(thread: Thread) -> Result<()> {
    let prog = program(thread)?;
    seccompiler::apply_filter(&prog).map_err(|e| SeccompError::Install {
        thread,
        reason: e.to_string(),
    })
}

/// The exit code the SIGSYS handler ends the process with.
static SIGSYS_EXIT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(1);

/// Installs, once per process, a SIGSYS handler that names the forbidden
/// call on stderr and ends the process with `code`: a front end's choice.
pub fn install_sigsys_handler(code: i32) -> Result<()> {
    SIGSYS_EXIT.store(code, std::sync::atomic::Ordering::SeqCst);
    static ONCE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, sigsys_handler)
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(SeccompError::SigsysHandler)
}

/// Writes `n` in decimal into the end of `buf`; returns where it starts.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return i;
        }
    }
}

/// The forbidden call's number in a SIGSYS siginfo: `si_syscall`, after
/// si_signo, si_errno, si_code (and padding) and `si_call_addr`.
const SI_SYSCALL_OFFSET: usize = 16 + 8;

extern "C" fn sigsys_handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSYS, whose
    // `_sigsys` member holds the call number at this offset (an int).
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    };
    let mut buf = [0u8; 20];
    let start = decimal(nr.max(0) as u64, &mut buf);
    let code = SIGSYS_EXIT.load(std::sync::atomic::Ordering::SeqCst);
    let mut code_buf = [0u8; 20];
    let code_start = decimal(code.max(0) as u64, &mut code_buf);
    let parts: [&[u8]; 5] = [
        b"vmm: seccomp: a VMM thread made system call ",
        &buf[start..],
        b", which its filter forbids; stopping (exit ",
        &code_buf[code_start..],
        b"). --seccomp off runs without filters.\n",
    ];
    for p in parts {
        // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffers
        // are live for the calls.
        unsafe { libc::write(2, p.as_ptr().cast(), p.len()) };
    }
    // SAFETY: as above; nothing else runs after this.
    unsafe { libc::_exit(code) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build_and_differ_by_thread() {
        let vcpu = allowed(Thread::Vcpu);
        let main = allowed(Thread::Main);
        assert!(vcpu.contains(&libc::SYS_ioctl));
        assert!(
            !vcpu.contains(&libc::SYS_epoll_wait),
            "the event loop is the main thread's"
        );
        assert!(main.contains(&libc::SYS_epoll_wait));
        for forbidden in [
            libc::SYS_execve,
            libc::SYS_socket,
            libc::SYS_fork,
            libc::SYS_ptrace,
        ] {
            assert!(!vcpu.contains(&forbidden) && !main.contains(&forbidden));
        }
        for t in [Thread::Vcpu, Thread::EventLoop, Thread::Main, Thread::Api] {
            assert!(!program(t).unwrap().is_empty());
        }
        // strace -p interrupts timed calls, which restart_syscall resumes:
        // every thread may make it (the nested fdatasync test found this).
        for t in [Thread::Vcpu, Thread::EventLoop, Thread::Main, Thread::Api] {
            assert!(allowed(t).contains(&libc::SYS_restart_syscall), "{t:?}");
        }
        let api = allowed(Thread::Api);
        assert!(api.contains(&libc::SYS_accept4));
        for forbidden in [
            libc::SYS_ioctl,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_socket,
        ] {
            assert!(!api.contains(&forbidden), "{forbidden}");
        }
    }

    #[test]
    fn decimal_numbers() {
        let mut b = [0u8; 20];
        let s = decimal(41, &mut b);
        assert_eq!(&b[s..], b"41");
        let s = decimal(0, &mut b);
        assert_eq!(&b[s..], b"0");
    }

    /// In a child process (this test binary again): the vCPU filter, then
    /// a forbidden call. The child must end with the seccomp exit code and
    /// the message.
    #[test]
    fn a_forbidden_call_ends_the_process_with_its_code_and_message() {
        if std::env::var_os("VMM_SECCOMP_CHILD").is_some() {
            install_sigsys_handler(11).unwrap();
            install(Thread::Vcpu).unwrap();
            // SAFETY: socket takes plain integers; it is the forbidden call.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            unreachable!("the filter let socket(2) through");
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "seccomp::tests::a_forbidden_call_ends_the_process_with_its_code_and_message",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VMM_SECCOMP_CHILD", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(11), "{err}");
        let socket = format!("system call {}, which its filter forbids", libc::SYS_socket);
        assert!(err.contains(&socket), "{err}");
    }
}
