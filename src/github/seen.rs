//! Which webhook deliveries were already handled, so that a replay plans nothing.
//!
//! A delivery is known by two keys: the sha256 of its `X-GitHub-Delivery` id and the sha256 of
//! its body. The id alone is not enough: the signature covers only the body, so whoever
//! captured one signed delivery could send it again under a fresh id. The body's digest is what
//! the signature vouches for; a delivery is a duplicate when either key was seen.
//!
//! The keys survive a restart: each is appended, before the delivery is acted on, to a small
//! file in the state dir (`github-webhook-seen`, mode 0600), one line per event:
//! `<unix seconds> + <key>` (remembered), `<unix seconds> - <key>` (forgotten again: a delivery
//! refused with 503 must be redeliverable) and `<unix seconds> h -` (the horizon, below).
//! The file is rewritten compactly at start-up and whenever it has grown to twice its content.
//!
//! Memory and disk are bounded: keys expire after [`RETENTION_SECS`] and at most [`MAX_KEYS`]
//! are kept, the oldest forgotten first. Because forgetting opens a window for a replay, the
//! store keeps a *horizon*: the receive time of the newest key it forgot (or `now -
//! RETENTION_SECS`). A delivery whose own signed timestamp (a pull request's `updated_at`) is
//! older than the horizon may be one that was forgotten, and is not planned.
//!
//! If a key cannot be written, the delivery is refused (503, GitHub retries) rather than
//! handled without the record that would stop its replay.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The file in the state dir.
pub(crate) const FILE: &str = "github-webhook-seen";
/// How long a delivery is remembered (GitHub redelivers up to three days back).
pub(crate) const RETENTION_SECS: u64 = 14 * 24 * 3600;
/// Keys remembered at most (two per delivery).
pub(crate) const MAX_KEYS: usize = 50_000;

#[derive(Debug, thiserror::Error)]
#[error("cannot record the delivery in {path}: {source}; redeliver later")]
pub(crate) struct SeenError {
    path: PathBuf,
    source: std::io::Error,
}

/// The two keys of a delivery: its id's digest and its body's digest.
pub(crate) fn keys(delivery: &str, body: &[u8]) -> [String; 2] {
    [
        format!("d:{}", hex::encode(Sha256::digest(delivery.as_bytes()))),
        format!("b:{}", hex::encode(Sha256::digest(body))),
    ]
}

fn valid_key(k: &str) -> bool {
    let Some((kind, hex)) = k.split_once(':') else {
        return false;
    };
    matches!(kind, "d" | "b") && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// `None`: in memory only.
    path: Option<PathBuf>,
    at: HashMap<String, u64>,
    /// Keys by receive time, oldest first (may hold keys forgotten since).
    order: VecDeque<(u64, String)>,
    horizon: u64,
    /// Lines in the file since it was last rewritten.
    lines: usize,
}

impl Seen {
    /// A store that forgets everything on restart (tests).
    #[cfg(test)]
    pub(crate) fn in_memory() -> Seen {
        Seen::default()
    }

    /// Loads `path` (a missing file is an empty store) and rewrites it compactly. A file that
    /// cannot be read is reported and started afresh; writing is checked on every delivery.
    pub(crate) fn open(path: PathBuf, now: u64) -> Seen {
        let mut seen = Seen {
            path: Some(path.clone()),
            ..Seen::default()
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut entries: HashMap<String, u64> = HashMap::new();
                for line in text.lines() {
                    let mut parts = line.splitn(3, ' ');
                    let (Some(ts), Some(op), Some(key)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    let Ok(ts) = ts.parse::<u64>() else { continue };
                    match op {
                        "+" if valid_key(key) => {
                            entries.insert(key.to_string(), ts);
                        }
                        "-" => {
                            entries.remove(key);
                        }
                        "h" => seen.horizon = seen.horizon.max(ts),
                        _ => {}
                    }
                }
                let mut sorted: Vec<(u64, String)> =
                    entries.into_iter().map(|(k, ts)| (ts, k)).collect();
                sorted.sort();
                for (ts, key) in sorted {
                    seen.insert(key, ts, now);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!(
                "cannot read the webhook delivery record {}: {e}; starting a new one",
                path.display()
            ),
        }
        seen.expire(now);
        if let Err(e) = seen.rewrite() {
            tracing::error!("{e}");
        }
        seen
    }

    fn insert(&mut self, key: String, ts: u64, now: u64) {
        self.at.insert(key.clone(), ts);
        self.order.push_back((ts, key));
        self.expire(now);
    }

    /// Drops expired keys and, beyond [`MAX_KEYS`], the oldest; the horizon follows.
    fn expire(&mut self, now: u64) {
        let cutoff = now.saturating_sub(RETENTION_SECS);
        while let Some((ts, key)) = self.order.front().cloned() {
            let live = self.at.get(&key) == Some(&ts);
            if live && ts >= cutoff && self.at.len() <= MAX_KEYS {
                break;
            }
            self.order.pop_front();
            if live {
                self.at.remove(&key);
                if ts >= cutoff {
                    self.horizon = self.horizon.max(ts);
                }
            }
        }
    }

    /// Deliveries whose own timestamp is older than this may have been forgotten.
    pub(crate) fn horizon(&self, now: u64) -> u64 {
        self.horizon.max(now.saturating_sub(RETENTION_SECS))
    }

    /// `Ok(false)` if any key was seen (a duplicate); otherwise records them all, durably first.
    pub(crate) fn check_and_remember(
        &mut self,
        keys: &[String],
        now: u64,
    ) -> Result<bool, SeenError> {
        let cutoff = now.saturating_sub(RETENTION_SECS);
        if keys
            .iter()
            .any(|k| self.at.get(k).is_some_and(|ts| *ts >= cutoff))
        {
            return Ok(false);
        }
        let lines: String = keys.iter().map(|k| format!("{now} + {k}\n")).collect();
        self.append(&lines)?;
        for k in keys {
            self.insert(k.clone(), now, now);
        }
        self.maybe_compact();
        Ok(true)
    }

    /// Forgets keys again (the delivery was refused and may be sent again).
    pub(crate) fn forget(&mut self, keys: &[String], now: u64) {
        let lines: String = keys.iter().map(|k| format!("{now} - {k}\n")).collect();
        if let Err(e) = self.append(&lines) {
            tracing::warn!("{e}");
        }
        for k in keys {
            self.at.remove(k);
        }
        self.order.retain(|(_, k)| !keys.contains(k));
    }

    fn append(&mut self, lines: &str) -> Result<(), SeenError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |source| SeenError {
            path: path.clone(),
            source,
        };
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(err)?;
        f.write_all(lines.as_bytes()).map_err(err)?;
        f.sync_data().map_err(err)?;
        self.lines += lines.lines().count();
        Ok(())
    }

    fn maybe_compact(&mut self) {
        if self.lines > 2 * self.at.len() + 1000
            && let Err(e) = self.rewrite()
        {
            tracing::warn!("{e}");
        }
    }

    /// Writes the live keys to a new file and renames it over the old one.
    fn rewrite(&mut self) -> Result<(), SeenError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let mut text = format!("{} h -\n", self.horizon);
        let mut n = 1;
        for (ts, key) in &self.order {
            if self.at.get(key) == Some(ts) {
                text.push_str(&format!("{ts} + {key}\n"));
                n += 1;
            }
        }
        let tmp = tmp_path(&path);
        let err = |source| SeenError {
            path: path.clone(),
            source,
        };
        terrarium_core::files::write_private(&tmp, text.as_bytes()).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        self.lines = n;
        Ok(())
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_or_an_id_seen_before_is_a_duplicate() {
        let mut s = Seen::in_memory();
        let a = keys("id-1", b"body");
        assert!(s.check_and_remember(&a, 100).unwrap());
        assert!(!s.check_and_remember(&a, 101).unwrap());
        // The same body under a new id, or a new body under the same id.
        assert!(!s.check_and_remember(&keys("id-2", b"body"), 102).unwrap());
        assert!(!s.check_and_remember(&keys("id-1", b"other"), 102).unwrap());
        // Forgotten (a 503): the same delivery is accepted again.
        s.forget(&a, 103);
        assert!(s.check_and_remember(&a, 104).unwrap());
    }

    #[test]
    fn keys_survive_a_restart_and_expire() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(FILE);
        let mut s = Seen::open(path.clone(), 1_000);
        assert!(s.check_and_remember(&keys("a", b"1"), 1_000).unwrap());
        assert!(s.check_and_remember(&keys("b", b"2"), 1_001).unwrap());
        s.forget(&keys("b", b"2"), 1_002);
        let mut s = Seen::open(path.clone(), 1_003);
        assert!(!s.check_and_remember(&keys("z", b"1"), 1_003).unwrap());
        assert!(s.check_and_remember(&keys("b", b"2"), 1_004).unwrap());
        // Compacted: one horizon line and the live keys.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().count() <= 5, "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // After the retention, gone; the horizon says replays that old are not trusted.
        let later = 1_004 + RETENTION_SECS + 1;
        let mut s = Seen::open(path, later);
        assert!(s.check_and_remember(&keys("a", b"1"), later).unwrap());
        assert!(s.horizon(later) >= 1_004);
    }

    #[test]
    fn the_oldest_keys_go_first_and_move_the_horizon() {
        let mut s = Seen::in_memory();
        for i in 0..(MAX_KEYS / 2 + 1) as u64 {
            assert!(
                s.check_and_remember(&keys(&i.to_string(), &i.to_be_bytes()), 10 + i)
                    .unwrap()
            );
        }
        assert!(s.at.len() <= MAX_KEYS);
        assert!(s.horizon(10) >= 10, "the forgotten delivery's time");
        assert!(
            s.check_and_remember(&keys("0", &0u64.to_be_bytes()), 10)
                .unwrap()
        );
    }

    #[test]
    fn a_record_that_cannot_be_written_refuses_the_delivery() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Seen::open(d.path().join("missing-dir").join(FILE), 1);
        assert!(s.check_and_remember(&keys("a", b"1"), 1).is_err());
        assert!(s.at.is_empty());
    }
}
