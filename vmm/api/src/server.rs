//! The API server's thread: one epoll loop over the Unix socket and its
//! connections, each read without blocking, so that no client (half a
//! request and a stall, hundreds of connections, a body over the limit,
//! bytes that are not HTTP, pipelined requests, a connection closed
//! mid-request) keeps another from being answered. A routed request is
//! handed to the front end's thread (`Job`) and its answer awaited; the
//! thread itself touches neither the VM nor any file.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::http::{self, Parsed, Response};
use crate::router::{self, ApiRequest};

/// A request for the front end's thread, and where its answer goes.
pub struct Job {
    /// What is asked.
    pub request: ApiRequest,
    /// The answer.
    pub reply: mpsc::SyncSender<Response>,
}

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub struct Options {
    /// The largest request body (`--http-api-max-payload-size`).
    pub max_payload: usize,
    /// The most connections held at once; one more closes the connection
    /// idle the longest.
    pub max_connections: usize,
    /// A connection holding part of a request for this long without a
    /// byte more is closed.
    pub stall_timeout: Duration,
    /// Install the API thread's seccomp filter.
    pub seccomp: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_payload: http::DEFAULT_MAX_PAYLOAD,
            max_connections: 512,
            stall_timeout: Duration::from_secs(10),
            seccomp: true,
        }
    }
}

/// Why the API socket cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The path exists and is not a socket left by a VMM that is gone.
    #[error("API socket '{}': {reason}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// What is there.
        reason: String,
    },
    /// Binding or preparing the socket failed.
    #[error("API socket '{}': {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The thread could not start.
    #[error("cannot start the API thread: {0}")]
    Thread(std::io::Error),
}

/// Binds the API socket at `path`. A socket there that nothing listens on
/// (left by a VMM that died) is replaced; anything else there is refused.
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let io = |source| ServerError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(ServerError::Path {
                path: path.to_path_buf(),
                reason: "exists and is not a socket; remove it or choose another path".into(),
            });
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(ServerError::Path {
                    path: path.to_path_buf(),
                    reason: "another process serves it".into(),
                })
            }
            Err(_) => {
                log::info!("removing the stale API socket {}", path.display());
                std::fs::remove_file(path).map_err(io)?;
            }
        }
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    Ok(listener)
}

/// The running server. Dropping it stops its thread and removes the
/// socket.
pub struct ApiServer {
    /// The routed requests, for the front end's thread.
    pub jobs: mpsc::Receiver<Job>,
    /// Readable when a job waits in `jobs`.
    pub wake: EventFd,
    stop: EventFd,
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Serves `listener` (bound at `path`) on a new thread.
    pub fn start(
        listener: UnixListener,
        path: &Path,
        options: Options,
    ) -> Result<ApiServer, ServerError> {
        let (tx, jobs) = mpsc::channel();
        let new_evt = || {
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(|e| ServerError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        };
        let wake = new_evt()?;
        let stop = new_evt()?;
        let mut worker = Worker {
            listener,
            conns: HashMap::new(),
            jobs: tx,
            wake: wake.try_clone().map_err(|e| ServerError::Io {
                path: path.to_path_buf(),
                source: e,
            })?,
            stop: stop.try_clone().map_err(|e| ServerError::Io {
                path: path.to_path_buf(),
                source: e,
            })?,
            options,
            stats: Stats::default(),
        };
        let thread = std::thread::Builder::new()
            .name("vmm-api".into())
            .spawn(move || worker.run())
            .map_err(ServerError::Thread)?;
        Ok(ApiServer {
            jobs,
            wake,
            stop,
            path: path.to_path_buf(),
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the server saw, logged when it stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// The most connections held at once.
    pub peak: usize,
    /// Requests answered.
    pub answered: u64,
    /// Connections closed for stalling mid-request.
    pub stalled: u64,
    /// Connections closed to make room.
    pub evicted: u64,
}

struct Conn {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// The last byte read.
    active: Instant,
    /// Close once `outbuf` is written.
    closing: bool,
    writable_watched: bool,
}

struct Worker {
    listener: UnixListener,
    conns: HashMap<RawFd, Conn>,
    jobs: mpsc::Sender<Job>,
    wake: EventFd,
    stop: EventFd,
    options: Options,
    stats: Stats,
}

/// Stop reading a connection's requests while this much of its answers is
/// unsent: a client that sends and never reads holds only this.
const MAX_PENDING_OUTPUT: usize = 64 * 1024;

impl Worker {
    fn run(&mut self) {
        let epoll = match Epoll::new() {
            Ok(e) => e,
            Err(e) => {
                log::error!("API server: cannot create its epoll: {e}");
                return;
            }
        };
        let listen_fd = self.listener.as_raw_fd();
        let stop_fd = self.stop.as_raw_fd();
        for fd in [listen_fd, stop_fd] {
            if let Err(e) = epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, fd as u64),
            ) {
                log::error!("API server: cannot watch its socket: {e}");
                return;
            }
        }
        // The filter once the epoll exists: no new descriptors but the
        // connections accepted.
        if self.options.seccomp {
            if let Err(e) = vmm::seccomp::install(vmm::seccomp::Thread::Api) {
                log::error!("API server: {e}; not serving");
                return;
            }
        }
        let mut events = vec![EpollEvent::default(); 64];
        loop {
            let n = match epoll.wait(1000, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("API server: epoll_wait: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                let fd = ev.fd();
                if fd == stop_fd {
                    log::debug!("API server: {:?}", self.stats);
                    return;
                }
                if fd == listen_fd {
                    self.accept(&epoll);
                } else {
                    self.serve(&epoll, fd, ev.event_set());
                }
            }
            self.close_stalled(&epoll);
        }
    }

    fn accept(&mut self, epoll: &Epoll) {
        loop {
            // SAFETY: accept4 on the listening socket with null address
            // pointers (the peer's address is not wanted); the flags make
            // the new descriptor non-blocking and close-on-exec.
            let fd = unsafe {
                libc::accept4(
                    self.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return; // EAGAIN: none left; or an error for that client
            }
            // SAFETY: `fd` is a new connected socket this code owns.
            let stream = unsafe { UnixStream::from_raw_fd(fd) };
            if self.conns.len() >= self.options.max_connections {
                self.evict(epoll);
            }
            if epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN | EventSet::READ_HANG_UP, fd as u64),
                )
                .is_err()
            {
                continue;
            }
            self.stats.accepted += 1;
            self.conns.insert(
                fd,
                Conn {
                    stream,
                    inbuf: Vec::new(),
                    outbuf: Vec::new(),
                    active: Instant::now(),
                    closing: false,
                    writable_watched: false,
                },
            );
            self.stats.peak = self.stats.peak.max(self.conns.len());
        }
    }

    /// Closes the connection idle the longest, to make room.
    fn evict(&mut self, epoll: &Epoll) {
        if let Some(&fd) = self
            .conns
            .iter()
            .min_by_key(|(_, c)| c.active)
            .map(|(fd, _)| fd)
        {
            self.stats.evicted += 1;
            self.close(epoll, fd);
        }
    }

    fn close(&mut self, epoll: &Epoll, fd: RawFd) {
        if self.conns.remove(&fd).is_some() {
            let _ = epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
    }

    fn close_stalled(&mut self, epoll: &Epoll) {
        let limit = self.options.stall_timeout;
        let stalled: Vec<RawFd> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.inbuf.is_empty() && c.active.elapsed() > limit)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in stalled {
            self.stats.stalled += 1;
            self.close(epoll, fd);
        }
    }

    fn serve(&mut self, epoll: &Epoll, fd: RawFd, events: EventSet) {
        let max_in = http::MAX_HEAD + self.options.max_payload;
        let Some(conn) = self.conns.get_mut(&fd) else {
            return;
        };
        let mut peer_closed = false;
        if events.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP) {
            let mut buf = [0u8; 16 * 1024];
            loop {
                if conn.inbuf.len() > max_in + buf.len() {
                    break; // parsed below: refused as too large
                }
                match conn.stream.read(&mut buf) {
                    Ok(0) => {
                        peer_closed = true;
                        break;
                    }
                    Ok(n) => {
                        conn.inbuf.extend_from_slice(&buf[..n]);
                        conn.active = Instant::now();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break, // WouldBlock, or a reset: seen below
                }
            }
        }
        self.answer(fd);
        let Some(conn) = self.conns.get_mut(&fd) else {
            return;
        };
        if flush(conn).is_err() || (conn.closing && conn.outbuf.is_empty()) || peer_closed {
            // A peer that closed gets nothing more: what it sent in full
            // was answered (or its answer is lost with it).
            self.close(epoll, fd);
            return;
        }
        let want_out = !conn.outbuf.is_empty();
        if want_out != conn.writable_watched {
            let mut set = EventSet::IN | EventSet::READ_HANG_UP;
            if want_out {
                set |= EventSet::OUT;
            }
            let _ = epoll.ctl(
                ControlOperation::Modify,
                fd,
                EpollEvent::new(set, fd as u64),
            );
            conn.writable_watched = want_out;
        }
    }

    /// Answers the whole requests `fd` holds, in order.
    fn answer(&mut self, fd: RawFd) {
        loop {
            let Some(conn) = self.conns.get_mut(&fd) else {
                return;
            };
            if conn.closing || conn.outbuf.len() > MAX_PENDING_OUTPUT {
                return;
            }
            let (response, used) = match http::parse(&conn.inbuf, self.options.max_payload) {
                Parsed::Incomplete => return,
                Parsed::Bad(r) => {
                    let n = conn.inbuf.len();
                    (r, n)
                }
                Parsed::Request(req, n) => {
                    let close = req.close;
                    let mut r = match router::route(&req) {
                        Ok(request) => self.carry_out(request),
                        Err(refused) => Response::fault(refused.0),
                    };
                    r.close |= close;
                    (r, n)
                }
            };
            let Some(conn) = self.conns.get_mut(&fd) else {
                return;
            };
            conn.inbuf.drain(..used);
            conn.outbuf.extend_from_slice(&response.to_bytes());
            conn.closing = response.close;
            self.stats.answered += 1;
        }
    }

    /// Hands `request` to the front end's thread and waits for the answer.
    fn carry_out(&mut self, request: ApiRequest) -> Response {
        let (reply, answer) = mpsc::sync_channel(1);
        if self.jobs.send(Job { request, reply }).is_err() {
            return Response::fault_status(500, "the VMM is shutting down");
        }
        if self.wake.write(1).is_err() {
            return Response::fault_status(500, "cannot reach the VMM's thread");
        }
        answer
            .recv()
            .unwrap_or_else(|_| Response::fault_status(500, "the VMM is shutting down"))
    }
}

/// Writes what `conn` can take of its pending answers.
fn flush(conn: &mut Conn) -> std::io::Result<()> {
    while !conn.outbuf.is_empty() {
        match conn.stream.write(&conn.outbuf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                conn.outbuf.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
