//! Binary upgrade: a new gateway process takes over the listening sockets of the running one
//! without closing any of them, and the running one steps aside only once the new one serves.
//!
//! The handshake, over a Unix stream socket in a private folder (mode 0700) whose path the new
//! process finds in [`HANDOVER_ENV`]:
//!
//! 1. The running process starts the new binary (the program and arguments it was started
//!    with) and waits for it to connect; it checks with SO_PEERCRED that the peer is that child.
//! 2. It sends an [`Offer`](wire::Offer) naming each listening socket (a listener socket's key,
//!    or `admin`) and how many descriptors it has, then the descriptors (SCM_RIGHTS). It keeps
//!    accepting on them meanwhile: the sockets are shared, never closed, so no connection is
//!    refused and none waiting in a queue is lost.
//! 3. The new process reads and validates its configuration, loads its plugins, takes over the
//!    sockets whose keys its configuration has (binding any new ones), probes every backend
//!    once, starts accepting — both processes now accept on the same sockets — and answers
//!    `Ready`. On any failure it answers `Failed` with the reason and exits.
//! 4. On `Ready` the running process stops accepting (its connections finish their requests
//!    and close; its WebSocket sessions go on until they end or `limits.upgrade_drain_timeout`,
//!    then get Close 1001) and exits once drained. On `Failed`, on the new process exiting or
//!    closing the socket, or after [`READY_TIMEOUT`], it kills the new process if still alive
//!    and goes on serving, untouched.

mod takeover;
pub mod wire;

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::control::Control;
use crate::listener::Inherited;

pub use takeover::Takeover;

/// The environment variable that tells a new process where to find the running one.
pub const HANDOVER_ENV: &str = "WASMGATE_HANDOVER";

/// How long the new process may take to answer (plugins compiled, first probes answered).
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// The program an upgrade starts: the executable's path and the arguments this process was
/// started with, read at start, so a binary replaced on disk since is the one started.
#[derive(Debug, Clone)]
pub struct Program {
    pub executable: PathBuf,
    pub args: Vec<OsString>,
}

impl Program {
    /// This process's executable and arguments.
    pub fn current() -> io::Result<Self> {
        Ok(Self {
            executable: std::env::current_exe()?,
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("this gateway cannot upgrade itself: it was not started by `wasmgate run`")]
    NotUpgradable,
    #[error("an upgrade is already under way")]
    InProgress,
    #[error("the sockets were already handed over to process {0}")]
    HandedOver(u32),
    #[error("the gateway is shutting down")]
    Stopping,
    #[error("cannot start {}: {source}", executable.display())]
    Spawn {
        executable: PathBuf,
        source: io::Error,
    },
    #[error("the new process {pid} exited ({status}) before it was ready")]
    Exited { pid: u32, status: ExitStatus },
    #[error("the new process {pid} refused to start: {error}")]
    Refused { pid: u32, error: String },
    #[error("the new process {pid} was not ready within {}s", READY_TIMEOUT.as_secs())]
    Timeout { pid: u32 },
    #[error("the handover failed: {0}")]
    Handover(#[from] io::Error),
}

/// A completed upgrade, as the admin API reports it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Upgraded {
    /// The new process, now serving.
    pub pid: u32,
    /// This process, now draining.
    pub previous_pid: u32,
    /// Listening sockets handed over (the admin listener's included).
    pub sockets: usize,
    /// From starting the new binary to its `Ready`, in milliseconds.
    pub ready_after_ms: u64,
    /// How long this process keeps its WebSocket sessions, in seconds.
    pub drain_timeout_secs: u64,
}

/// Upgrades a running gateway; see the [module](self).
pub struct Upgrader {
    program: Program,
    control: Arc<Control>,
    /// The admin listener's socket under a descriptor of its own, when there is one.
    admin: Option<std::net::TcpListener>,
    one_at_a_time: tokio::sync::Mutex<()>,
    /// The new process's id once it serves.
    handed_over: tokio::sync::watch::Sender<Option<u32>>,
}

impl Upgrader {
    pub fn new(
        program: Program,
        control: Arc<Control>,
        admin: Option<std::net::TcpListener>,
    ) -> Arc<Self> {
        Arc::new(Self {
            program,
            control,
            admin,
            one_at_a_time: tokio::sync::Mutex::new(()),
            handed_over: tokio::sync::watch::Sender::new(None),
        })
    }

    /// Starts the new binary, hands the sockets over, and once it serves stops accepting here;
    /// see the [module](self). On an error nothing changed here.
    pub async fn upgrade(&self) -> Result<Upgraded, UpgradeError> {
        let _one = self
            .one_at_a_time
            .try_lock()
            .map_err(|_| UpgradeError::InProgress)?;
        if let Some(pid) = *self.handed_over.borrow() {
            return Err(UpgradeError::HandedOver(pid));
        }
        if self.control.plane().is_stopping() {
            return Err(UpgradeError::Stopping);
        }
        let mut sockets = self.control.handover_sockets().await;
        if let Some(admin) = &self.admin {
            sockets.push((Inherited::ADMIN.to_owned(), vec![admin.try_clone()?]));
        }
        let count = sockets.len();
        let program = self.program.clone();
        tracing::info!(executable = %program.executable.display(), sockets = count, "upgrade: starting the new binary");
        let started = Instant::now();
        let pid = tokio::task::spawn_blocking(move || hand_over(&program, sockets))
            .await
            .map_err(|e| UpgradeError::Handover(io::Error::other(e)))??;
        let ready_after = started.elapsed();
        // The new process accepts on every socket: stop here. Connections finish their
        // requests; WebSocket sessions go on until they end or the drain timeout.
        self.control.stop_accepting().await;
        self.handed_over.send_replace(Some(pid));
        let drain = self
            .control
            .plane()
            .snapshot
            .load()
            .config
            .limits
            .upgrade_drain_timeout;
        tracing::info!(
            pid,
            ready_after_ms = ready_after.as_millis() as u64,
            "upgrade: the new process serves; draining"
        );
        Ok(Upgraded {
            pid,
            previous_pid: std::process::id(),
            sockets: count,
            ready_after_ms: ready_after.as_millis() as u64,
            drain_timeout_secs: drain.as_secs(),
        })
    }

    /// Completes once the sockets are handed over, with the new process's id.
    pub fn handed_over(&self) -> impl std::future::Future<Output = u32> + Send + 'static {
        let mut rx = self.handed_over.subscribe();
        async move {
            let pid = rx
                .wait_for(Option::is_some)
                .await
                .map(|pid| pid.unwrap_or_default());
            match pid {
                Ok(pid) => pid,
                // The upgrader is gone: never.
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// Blocking: starts the program, offers it the sockets, waits for its answer. Returns the new
/// process's id once it serves; on any failure the new process is killed (if still alive).
fn hand_over(
    program: &Program,
    sockets: Vec<(String, Vec<std::net::TcpListener>)>,
) -> Result<u32, UpgradeError> {
    let dir = private_dir()?;
    let path = dir.join("handover.sock");
    let result = (|| {
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        let mut child = Command::new(&program.executable)
            .args(&program.args)
            .env(HANDOVER_ENV, &path)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| UpgradeError::Spawn {
                executable: program.executable.clone(),
                source,
            })?;
        match offer(&listener, &mut child, &sockets) {
            Ok(pid) => {
                // Reaped when it exits, should it exit before this process does.
                std::thread::spawn(move || child.wait());
                Ok(pid)
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    })();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    result
}

/// A folder only this user can enter, for the handover socket.
fn private_dir() -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!(
        "wasmgate-upgrade-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

fn offer(
    listener: &UnixListener,
    child: &mut Child,
    sockets: &[(String, Vec<std::net::TcpListener>)],
) -> Result<u32, UpgradeError> {
    let pid = child.id();
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut stream = wait_for_connection(listener, child, deadline)?;
    // Only the process just started may take the sockets (the folder already keeps other
    // users out).
    let peer = rustix::net::sockopt::socket_peercred(&stream).map_err(io::Error::from)?;
    if peer.pid.as_raw_nonzero().get() as u32 != pid {
        return Err(UpgradeError::Handover(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "process {} connected instead of the new process {pid}",
                peer.pid.as_raw_nonzero()
            ),
        )));
    }
    stream.set_nonblocking(false)?;
    wire::send_json(
        &mut stream,
        &wire::Offer {
            version: wire::VERSION,
            pid: std::process::id(),
            sockets: sockets
                .iter()
                .map(|(name, fds)| wire::OfferedSocket {
                    name: name.clone(),
                    count: fds.len(),
                })
                .collect(),
        },
    )?;
    let fds: Vec<_> = sockets
        .iter()
        .flat_map(|(_, fds)| fds.iter().map(|fd| fd.as_fd()))
        .collect();
    wire::send_fds(&stream, &fds)?;

    // The answer, or the end of the stream when the new process dies: a watchdog shuts the
    // stream down at the deadline so the read cannot hang.
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    let shut = stream.try_clone()?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watchdog.recv_timeout(remaining) {
            let _ = shut.shutdown(std::net::Shutdown::Both);
        }
    });
    let answer = wire::recv_json::<wire::Answer>(&mut stream);
    drop(done);
    match answer {
        Ok(wire::Answer::Ready { .. }) => Ok(pid),
        Ok(wire::Answer::Failed { error, .. }) => Err(UpgradeError::Refused { pid, error }),
        Err(e) => {
            if Instant::now() >= deadline {
                return Err(UpgradeError::Timeout { pid });
            }
            // Closed without an answer: it crashed, most likely; give it a moment to be reaped.
            for _ in 0..50 {
                if let Some(status) = child.try_wait()? {
                    return Err(UpgradeError::Exited { pid, status });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(UpgradeError::Handover(e))
        }
    }
}

/// Waits for the new process to connect, for it to exit, or for the deadline.
fn wait_for_connection(
    listener: &UnixListener,
    child: &mut Child,
    deadline: Instant,
) -> Result<UnixStream, UpgradeError> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Ok(stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = child.try_wait()? {
            return Err(UpgradeError::Exited {
                pid: child.id(),
                status,
            });
        }
        if Instant::now() >= deadline {
            return Err(UpgradeError::Timeout { pid: child.id() });
        }
        // A process starting up: polled, off the runtime.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `signal` to process `pid` (a supervisor to the processes it started).
pub fn signal(pid: u32, signal: rustix::process::Signal) -> io::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "process id 0"))?;
    rustix::process::kill_process(pid, signal).map_err(io::Error::from)
}

/// Makes the kernel send SIGTERM to this process when the process that started it ends (a
/// supervised gateway process outlives no supervisor).
pub fn end_with_parent() -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        .map_err(io::Error::from)
}

pub use rustix::process::Signal;
