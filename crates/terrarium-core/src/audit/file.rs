//! The audit file sink: one JSON event per line in `audit-YYYY-MM-DD.jsonl` (UTC) under the
//! audit directory, a new file each day, files older than the retention removed.
//!
//! Writing goes through a `tracing-appender` appender, one `write` per event, before the tool
//! result is returned; nothing is buffered in the process, so a crash or SIGKILL loses nothing
//! already returned. Events are not fsynced (a power loss can lose the last ones): ship them
//! off the host with the syslog sink where that matters. The clock is injected so that rotation
//! and retention are testable.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::time;

pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";

pub fn file_name(date: &str) -> String {
    format!("{PREFIX}{date}{SUFFIX}")
}

/// The date in an audit file's name.
pub fn date_of(path: &Path) -> Option<&str> {
    path.file_name()?
        .to_str()?
        .strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)
}

/// Audit files in a directory, oldest first.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| date_of(p).is_some())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

pub struct DailyFiles {
    /// The audit directory, open and exclusively `flock`ed for this writer's life: one hash
    /// chain has one writer. Two servers appending to the same files would each link to their
    /// own idea of the head, and `audit verify` would report insertions nobody made.
    _lock: std::fs::File,
    dir: PathBuf,
    retention_days: u32,
    clock: Arc<dyn Clock>,
    current: Option<(String, std::fs::File)>,
    /// The current file does not end with a newline (a torn line from a crash).
    needs_newline: bool,
}

impl DailyFiles {
    pub fn open(
        dir: &Path,
        retention_days: u32,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<DailyFiles> {
        crate::files::create_private_dir(dir)?;
        let lock = lock_dir(dir, LOCK_WAIT)?;
        let files = DailyFiles {
            _lock: lock,
            dir: dir.to_path_buf(),
            retention_days,
            clock,
            current: None,
            needs_newline: false,
        };
        files.prune();
        Ok(files)
    }

    fn switch_to(&mut self, date: String) -> std::io::Result<()> {
        let name = file_name(&date);
        let path = self.dir.join(&name);
        // Private from its creation; every write appends (O_APPEND), one line at a time.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&path)?
        };
        self.needs_newline = !ends_with_newline(&path);
        self.current = Some((date, file));
        self.prune();
        Ok(())
    }

    /// Appends one line (which must end with a newline), switching files at midnight UTC.
    pub fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let today = time::date(self.clock.now());
        if self.current.as_ref().is_none_or(|(d, _)| *d != today) {
            self.switch_to(today)?;
        }
        let needs_newline = self.needs_newline;
        let Some((_, appender)) = self.current.as_mut() else {
            return Err(std::io::Error::other("no audit file open"));
        };
        if needs_newline {
            appender.write_all(b"\n")?;
        }
        appender.write_all(line)?;
        appender.flush()?;
        self.needs_newline = false;
        Ok(())
    }

    /// Removes files whose date is more than `retention_days` before today.
    pub fn prune(&self) {
        let Some(today) = time::days_of(&time::date(self.clock.now())) else {
            return;
        };
        for f in files(&self.dir) {
            let old = date_of(&f)
                .and_then(time::days_of)
                .is_some_and(|d| today - d >= i64::from(self.retention_days));
            if old {
                let _ = std::fs::remove_file(&f);
            }
        }
    }
}

/// How long a second writer waits for the lock before giving up: long enough for a server
/// that is being restarted (an MCP client relaunching a stdio server) to let go of it.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes the exclusive lock on the audit directory, waiting up to `wait`. The lock goes with
/// the returned descriptor (close-on-exec, so terraform never inherits it) and is released by
/// the kernel when the process ends, however it ends. `WouldBlock` when another holds it.
pub fn lock_dir(dir: &Path, wait: std::time::Duration) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let handle = std::fs::File::open(dir)?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(handle);
        }
        let err = std::io::Error::last_os_error();
        match err.kind() {
            std::io::ErrorKind::WouldBlock if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            std::io::ErrorKind::Interrupted => {}
            _ => return Err(err),
        }
    }
}

fn ends_with_newline(path: &Path) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return true;
    };
    let Ok(len) = f.seek(SeekFrom::End(0)) else {
        return true;
    };
    if len == 0 {
        return true;
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::End(-1)).is_ok() && f.read_exact(&mut last).is_ok() && last[0] == b'\n'
}

/// The last complete, parseable event in the newest audit file that has one, and whether a
/// torn (incomplete) line was found after it.
///
/// Reads each file from its end, 64 KiB first and twice as much each time no complete event is
/// found, up to its last 4 MiB: start-up costs the size of the last event, not of the day's file.
pub fn last_event(dir: &Path) -> (Option<serde_json::Value>, bool) {
    const FIRST: u64 = 64 << 10;
    const MOST: u64 = 4 << 20;
    let mut torn = false;
    for f in files(dir).iter().rev() {
        let Ok(mut file) = std::fs::File::open(f) else {
            continue;
        };
        let len = file.seek(SeekFrom::End(0)).unwrap_or(0);
        let mut window = FIRST.min(len);
        loop {
            let start = len - window;
            // One byte more, before the window: whether its first line starts at `start`.
            let from = start.saturating_sub(1);
            let mut buf = Vec::with_capacity((len - from) as usize);
            if file.seek(SeekFrom::Start(from)).is_err()
                || (&mut file).take(len - from).read_to_end(&mut buf).is_err()
            {
                break;
            }
            let whole_first = start == 0 || buf.first() == Some(&b'\n');
            let body = if start == 0 { &buf[..] } else { &buf[1..] };
            let (found, torn_here) = last_in(body, whole_first);
            if let Some(event) = found {
                return (Some(event), torn || torn_here);
            }
            if start == 0 || window >= MOST {
                torn |= torn_here;
                break;
            }
            window = (window * 2).min(MOST).min(len);
        }
    }
    (None, torn)
}

/// The last complete event in `buf` (the tail of a file; `from_start`: its first line starts
/// at its first byte), and whether anything after it was torn or unparseable.
fn last_in(buf: &[u8], from_start: bool) -> (Option<serde_json::Value>, bool) {
    let mut torn = false;
    let mut body = buf;
    if !from_start {
        // The bytes before the first newline may be the end of a longer line.
        match body.iter().position(|b| *b == b'\n') {
            Some(i) => body = &body[i + 1..],
            // All of it is the end of one line with no newline: torn.
            None => return (None, !body.is_empty()),
        }
    }
    let complete = body.ends_with(b"\n");
    let mut lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .collect();
    if !complete && !lines.is_empty() {
        lines.pop();
        torn = true;
    }
    for l in lines.iter().rev() {
        match serde_json::from_slice::<serde_json::Value>(l) {
            Ok(v) if v.get("hash").is_some() => return (Some(v), torn),
            _ => torn = true,
        }
    }
    (None, torn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::{Duration, UNIX_EPOCH};

    struct FakeClock(Mutex<SystemTime>);
    impl Clock for FakeClock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    #[test]
    fn rotates_daily_and_removes_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let day = |d: u64| UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + d * 86_400 + 3600);
        let clock = Arc::new(FakeClock(Mutex::new(day(0))));
        let mut files_sink = DailyFiles::open(dir.path(), 2, clock.clone()).unwrap();
        files_sink.write_line(b"{\"n\":0}\n").unwrap();
        *clock.0.lock().unwrap() = day(1);
        files_sink.write_line(b"{\"n\":1}\n").unwrap();
        assert_eq!(files(dir.path()).len(), 2, "a new file for the new day");
        *clock.0.lock().unwrap() = day(3);
        files_sink.write_line(b"{\"n\":3}\n").unwrap();
        let left: Vec<String> = files(dir.path())
            .iter()
            .map(|p| date_of(p).unwrap().to_string())
            .collect();
        assert_eq!(
            left,
            vec![time::date(day(3))],
            "days 0 and 1 are past the 2-day retention"
        );
        let mode = std::fs::metadata(&files(dir.path())[0])
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn finds_the_last_event_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(file_name("2026-01-01"));
        std::fs::write(
            &f,
            "{\"seq\":1,\"hash\":\"a\"}\n{\"seq\":2,\"hash\":\"b\"}\n{\"seq\":3,\"ha",
        )
        .unwrap();
        let (last, torn) = last_event(dir.path());
        assert_eq!(last.unwrap()["seq"], 2);
        assert!(torn);
        let clock = Arc::new(FakeClock(Mutex::new(
            UNIX_EPOCH + Duration::from_secs(days(2026) * 86_400),
        )));
        let mut sink = DailyFiles::open(dir.path(), 3650, clock).unwrap();
        sink.write_line(b"{\"seq\":3,\"hash\":\"c\"}\n").unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.ends_with("{\"seq\":3,\"ha\n{\"seq\":3,\"hash\":\"c\"}\n"),
            "{text}"
        );
    }

    #[test]
    fn finds_the_last_event_from_the_end_of_a_large_file_whatever_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(file_name("2026-01-01"));
        let mut text = String::new();
        for seq in 0..5_000 {
            text.push_str(&format!(
                "{{\"seq\":{seq},\"hash\":\"h\",\"pad\":\"{}\"}}\n",
                "x".repeat(40)
            ));
        }
        // The last event is longer than the first window read from the end (64 KiB).
        let long = "y".repeat(300 << 10);
        text.push_str(&format!(
            "{{\"seq\":5000,\"hash\":\"h\",\"pad\":\"{long}\"}}\n"
        ));
        std::fs::write(&f, &text).unwrap();
        let (last, torn) = last_event(dir.path());
        assert_eq!(last.unwrap()["seq"], 5000);
        assert!(!torn);
        // A torn line longer than the window, after a complete event.
        text.push_str(&format!("{{\"seq\":5001,\"pad\":\"{long}"));
        std::fs::write(&f, &text).unwrap();
        let (last, torn) = last_event(dir.path());
        assert_eq!(last.unwrap()["seq"], 5000);
        assert!(torn);
        // A torn tail longer than the most that is read: still reported as torn.
        std::fs::write(&f, format!("{{\"seq\":1,\"pad\":\"{}", "z".repeat(5 << 20))).unwrap();
        let (last, torn) = last_event(dir.path());
        assert!(last.is_none());
        assert!(torn);
        // An event that starts exactly where the window does is found whole.
        let event = "{\"seq\":7,\"hash\":\"h\"}\n";
        let filler = "x".repeat((64 << 10) - event.len() - 1);
        std::fs::write(&f, format!("before\n{event}{filler}\n")).unwrap();
        let (last, torn) = last_event(dir.path());
        assert_eq!(last.unwrap()["seq"], 7);
        assert!(torn, "the filler line is not an event");
    }

    fn days(_year: u64) -> u64 {
        time::days_of("2026-01-01").unwrap() as u64
    }
}
