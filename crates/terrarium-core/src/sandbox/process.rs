//! Running terraform and making sure the run ends: no shell (`spawn`), its own process group, a
//! deadline, and a kill of the whole group (and its cgroup) at the end so no orphan outlives
//! the run.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, Interest};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::capture::{Capture, Captured};
use super::kernel::ChildSetup;
use super::reaper::{self, ActiveRuns};
use super::spawn::{self, SpawnFailure};

/// Everything needed to start one terraform process.
#[derive(Debug)]
pub struct RunSpec {
    pub program: PathBuf,
    /// Arguments after the program name.
    pub argv: Vec<OsString>,
    /// The complete environment; nothing of the server's own is inherited.
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub kill_grace: Duration,
    /// Limits and kernel layers the child applies before exec.
    pub setup: ChildSetup,
    pub output_limit: usize,
}

/// One line of output, as it arrives (for progress reporting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamLine {
    Stdout(String),
    Stderr(String),
}

/// How a run ended. Every field is always filled in, whatever happened.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub exit_code: Option<i32>,
    /// The signal that ended terraform, if one did.
    pub signal: Option<i32>,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
    pub timed_out: bool,
    pub cancelled: bool,
    /// Processes of the run's group were still alive after terraform exited and were killed.
    pub stragglers_killed: bool,
}

impl RunOutcome {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.cancelled
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for terraform failed: {0}")]
    Wait(std::io::Error),
    /// The sandboxed child failed a step of its set-up (or the exec) and terraform never ran.
    #[error("terraform could not be started in its sandbox: {0}")]
    Setup(super::step::ChildError),
}

pub type LineSink<'a> = &'a (dyn Fn(StreamLine) + Send + Sync);

/// The edge where runs become processes. A trait so the executor can be tested without one.
pub trait Runner: Send + Sync {
    fn run<'a>(
        &'a self,
        spec: RunSpec,
        on_line: Option<LineSink<'a>>,
        cancel: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Result<RunOutcome, SpawnError>> + Send + 'a>>;
}

/// The real runner.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    active: ActiveRuns,
}

impl ProcessRunner {
    /// Also makes the server a child subreaper (see `reaper`), so descendants that escape a
    /// run's process group without a PID namespace can still be found.
    pub fn new() -> ProcessRunner {
        if let Err(e) = reaper::become_subreaper() {
            tracing::warn!(error = %e, "cannot become a child subreaper");
        }
        ProcessRunner {
            active: ActiveRuns::default(),
        }
    }
}

impl Default for ProcessRunner {
    fn default() -> Self {
        ProcessRunner::new()
    }
}

impl Runner for ProcessRunner {
    fn run<'a>(
        &'a self,
        spec: RunSpec,
        on_line: Option<LineSink<'a>>,
        cancel: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Result<RunOutcome, SpawnError>> + Send + 'a>> {
        Box::pin(run(spec, on_line, cancel, &self.active))
    }
}

/// Longest line forwarded as one progress line; longer ones are cut (the capture keeps them).
const MAX_LINE: usize = 16 * 1024;
/// How long output readers may take after the group is gone, before they are abandoned (a
/// descendant that left the group may still hold a pipe open).
const DRAIN_WAIT: Duration = Duration::from_secs(2);

async fn run(
    spec: RunSpec,
    on_line: Option<LineSink<'_>>,
    cancel: CancellationToken,
    active: &ActiveRuns,
) -> Result<RunOutcome, SpawnError> {
    let spawn_error = |source: std::io::Error| SpawnError::Spawn {
        program: spec.program.display().to_string(),
        source,
    };
    let cstring = |b: &[u8]| {
        CString::new(b).map_err(|_| {
            spawn_error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an argument or environment entry contains a NUL byte",
            ))
        })
    };
    let program = cstring(spec.program.as_os_str().as_bytes())?;
    let argv = std::iter::once(spec.program.as_os_str())
        .chain(spec.argv.iter().map(|a| a.as_os_str()))
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let env = spec
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut setup = spec.setup;
    // Without a PID namespace, descendants that left the group come back to the server (its
    // subreaper) when their parent dies: they are swept up, killed if a cgroup did not already
    // kill them, and reaped, after the run.
    let pid_namespace = setup.namespaces & libc::CLONE_NEWPID != 0;
    let sweep_after = !pid_namespace;
    let started = Instant::now();
    let spawned = {
        // Registered before a sweep can run, so a run starting is never taken for an orphan.
        let mut registered = active.lock();
        let spawned = spawn::spawn(&program, &argv, &env, &mut setup).map_err(|e| match e {
            SpawnFailure::Server(e) => spawn_error(e),
            SpawnFailure::Child(e) => SpawnError::Setup(e),
        })?;
        registered.insert(spawned.pid);
        spawned
    };
    // The parent keeps the run's cgroup, to kill it at the end.
    let mut cgroup = setup.cgroup.take();
    drop(setup);
    let child_pid = spawned.pid;
    // The child called setsid(), so its pid is its process group id.
    let pgid = Some(Pid::from_raw(child_pid));
    // If this future is dropped before the run ends (the client went away, the server is
    // shutting down), the group is killed and the process reaped rather than left running
    // unsupervised.
    let mut guard = GroupGuard {
        pgid,
        pid: child_pid,
        active: active.clone(),
        armed: true,
    };
    // SAFETY: the pidfd is owned by the AsyncFd from here on and stays open with it.
    let exited = unsafe { AsyncFd::register_with_interest(spawned.pidfd, Interest::READABLE) }
        .map_err(|e| spawn_error(e.into_parts().1))?;
    let stdout = pipe::Receiver::from_owned_fd(spawned.stdout).map_err(spawn_error)?;
    let stderr = pipe::Receiver::from_owned_fd(spawned.stderr).map_err(spawn_error)?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let want_lines = on_line.is_some();
    let out_task = Some(tokio::spawn(read_stream(
        stdout,
        spec.output_limit,
        want_lines.then(|| tx.clone()),
        StreamLine::Stdout,
    )));
    let err_task = Some(tokio::spawn(read_stream(
        stderr,
        spec.output_limit,
        want_lines.then(|| tx.clone()),
        StreamLine::Stderr,
    )));
    drop(tx);

    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let kill_at = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(kill_at);
    let mut timed_out = false;
    let mut cancelled = false;
    let mut interrupting = false;
    let mut killed = false;

    let status = loop {
        tokio::select! {
            ready = exited.readable() => {
                ready.map_err(SpawnError::Wait)?.retain_ready();
                break ExitStatus::from_raw(spawn::reap(child_pid).map_err(SpawnError::Wait)?);
            }
            Some(line) = rx.recv() => {
                if let Some(f) = on_line { f(line) }
            }
            _ = &mut deadline, if !interrupting => {
                timed_out = true;
                interrupting = true;
                signal_group(pgid, Signal::SIGINT);
                kill_at.as_mut().reset(tokio::time::Instant::now() + spec.kill_grace);
            }
            _ = cancel.cancelled(), if !interrupting => {
                cancelled = true;
                interrupting = true;
                signal_group(pgid, Signal::SIGINT);
                kill_at.as_mut().reset(tokio::time::Instant::now() + spec.kill_grace);
            }
            _ = &mut kill_at, if interrupting && !killed => {
                killed = true;
                signal_group(pgid, Signal::SIGKILL);
            }
        }
    };
    let duration = started.elapsed();
    // Whatever terraform left behind in its group (provider plugins, provisioner children) goes
    // now. The group id stays reserved while any member lives, so this cannot hit a stranger.
    // In a PID namespace there is nothing left: the kernel killed the namespace when its
    // PID 1, terraform, exited.
    let mut stragglers_killed = !pid_namespace && signal_group(pgid, Signal::SIGKILL);
    // Then whatever is still in the run's cgroup, whatever session or namespace it is in.
    if let Some(cg) = cgroup.as_mut() {
        stragglers_killed |= cg.teardown(spec.kill_grace);
    }
    guard.armed = false;
    active.lock().remove(&child_pid);
    if sweep_after {
        stragglers_killed |= reaper::sweep(active) > 0;
    }

    let stdout = finish_reader(out_task).await;
    let stderr = finish_reader(err_task).await;
    if let Some(f) = on_line {
        while let Ok(line) = rx.try_recv() {
            f(line);
        }
    }
    Ok(RunOutcome {
        exit_code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
        duration,
        timed_out,
        cancelled,
        stragglers_killed,
    })
}

struct GroupGuard {
    pgid: Option<Pid>,
    pid: libc::pid_t,
    active: ActiveRuns,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, Signal::SIGKILL);
            // SAFETY: killing our own child, which nothing else waits for any more.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let (pid, active) = (self.pid, self.active.clone());
            // The killed process is collected off the async threads (it may take a moment
            // to die), and only then forgotten, so a sweep never reaps it in between.
            let _ = std::thread::Builder::new()
                .name("terrarium-reap".into())
                .spawn(move || {
                    let _ = spawn::reap(pid);
                    active.lock().remove(&pid);
                });
        }
    }
}

/// Signals the whole group; true if any process received it.
fn signal_group(pgid: Option<Pid>, sig: Signal) -> bool {
    match pgid {
        Some(pgid) => killpg(pgid, sig).is_ok(),
        None => false,
    }
}

async fn finish_reader(task: Option<tokio::task::JoinHandle<Captured>>) -> Captured {
    let Some(mut task) = task else {
        return Captured::default();
    };
    match tokio::time::timeout(DRAIN_WAIT, &mut task).await {
        Ok(Ok(c)) => c,
        _ => {
            task.abort();
            Captured {
                text: "[output incomplete: a process outside the run's group held the stream open]"
                    .into(),
                total_bytes: 0,
                truncated: true,
            }
        }
    }
}

async fn read_stream<R: AsyncRead + Unpin>(
    mut r: R,
    limit: usize,
    lines: Option<mpsc::UnboundedSender<StreamLine>>,
    wrap: fn(String) -> StreamLine,
) -> Captured {
    let mut cap = Capture::new(limit);
    let mut buf = vec![0u8; 16 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        cap.push(&buf[..n]);
        if let Some(tx) = &lines {
            partial.extend_from_slice(&buf[..n]);
            while let Some(pos) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=pos).collect();
                let _ = tx.send(wrap(
                    String::from_utf8_lossy(&line[..line.len() - 1]).into_owned(),
                ));
            }
            if partial.len() > MAX_LINE {
                let _ = tx.send(wrap(
                    String::from_utf8_lossy(&partial[..MAX_LINE]).into_owned(),
                ));
                partial.clear();
            }
        }
    }
    if let Some(tx) = &lines
        && !partial.is_empty()
    {
        let _ = tx.send(wrap(String::from_utf8_lossy(&partial).into_owned()));
    }
    cap.finish()
}
