//! `terrarium audit verify`: checks the hash chain across files and reports the first break.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::chain::{GENESIS, hash_of};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An event's content no longer matches its hash.
    Edited,
    /// Events are missing.
    Deleted,
    /// An event was added that the chain does not account for.
    Inserted,
    /// Events are out of order.
    Reordered,
    /// An incomplete last line (a crash while writing), or a line that is not an event.
    Torn,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub kind: Kind,
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    pub seq: Option<u64>,
    pub message: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub events: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub problems: Vec<Problem>,
}

impl Report {
    /// 0: intact; 1: the chain is broken (tampering); 2: intact apart from torn lines (crashes).
    pub fn exit_code(&self) -> u8 {
        if self.problems.iter().any(|p| p.kind != Kind::Torn) {
            1
        } else if self.problems.is_empty() {
            0
        } else {
            2
        }
    }
}

struct Entry {
    file: PathBuf,
    line: usize,
    seq: u64,
    prev_hash: String,
    hash: String,
    valid_hash: bool,
}

/// Verifies files in the order given (pass them oldest first; a shell glob of the daily files
/// sorts that way). The first event's `prev_hash` is taken as the anchor unless it is `seq` 1,
/// which must start from the genesis hash: older files may have been removed by retention.
pub fn verify(files: &[PathBuf]) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut entries: Vec<Entry> = Vec::new();
    for (fi, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file)?;
        let complete = text.ends_with('\n') || text.is_empty();
        let lines: Vec<&str> = text.split('\n').collect();
        let count = if complete {
            lines.len().saturating_sub(1)
        } else {
            lines.len()
        };
        for (i, raw) in lines.iter().take(count).enumerate() {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let last_of_file = i + 1 == count;
            let parsed: Option<serde_json::Map<String, Value>> = serde_json::from_str(raw).ok();
            let fields = parsed.as_ref().and_then(|m| {
                Some((
                    m.get("seq")?.as_u64()?,
                    m.get("prev_hash")?.as_str()?.to_string(),
                    m.get("hash")?.as_str()?.to_string(),
                ))
            });
            let (Some(m), Some((seq, prev_hash, hash))) = (parsed.as_ref(), fields) else {
                let torn = last_of_file && (!complete || fi + 1 == files.len());
                report.problems.push(Problem {
                    kind: Kind::Torn,
                    file: file.clone(),
                    line,
                    seq: None,
                    message: if torn && !complete {
                        "incomplete last line (the writer was killed mid-write)".into()
                    } else {
                        "line is not an audit event".into()
                    },
                });
                continue;
            };
            let valid_hash = hash_of(m, &prev_hash) == hash;
            entries.push(Entry {
                file: file.clone(),
                line,
                seq,
                prev_hash,
                hash,
                valid_hash,
            });
        }
    }
    report.events = entries.len() as u64;
    report.first_seq = entries.first().map(|e| e.seq);
    report.last_seq = entries.last().map(|e| e.seq);

    let mut seen: HashSet<u64> = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let problem = |kind: Kind, message: String| Problem {
            kind,
            file: e.file.clone(),
            line: e.line,
            seq: Some(e.seq),
            message,
        };
        if !e.valid_hash {
            report.problems.push(problem(
                Kind::Edited,
                "the event does not match its hash: it was changed".into(),
            ));
            break;
        }
        if i == 0 {
            if e.seq == 1 && e.prev_hash != GENESIS {
                report.problems.push(problem(
                    Kind::Inserted,
                    "seq 1 does not start from the genesis hash".into(),
                ));
                break;
            }
            seen.insert(e.seq);
            continue;
        }
        let p = &entries[i - 1];
        if e.seq == p.seq + 1 && e.prev_hash == p.hash {
            seen.insert(e.seq);
            continue;
        }
        let later: HashSet<u64> = entries[i + 1..].iter().map(|x| x.seq).collect();
        let (kind, message) = if seen.contains(&e.seq) {
            (
                Kind::Inserted,
                format!("seq {} appears twice: an event was inserted", e.seq),
            )
        } else if e.seq > p.seq + 1 {
            if (p.seq + 1..e.seq).any(|s| later.contains(&s)) {
                (
                    Kind::Reordered,
                    format!("seq {} comes before seq {}", e.seq, p.seq + 1),
                )
            } else {
                (
                    Kind::Deleted,
                    format!("events {}..{} are missing", p.seq + 1, e.seq - 1),
                )
            }
        } else if e.seq <= p.seq {
            (
                Kind::Reordered,
                format!("seq {} comes after seq {}", e.seq, p.seq),
            )
        } else {
            (
                Kind::Inserted,
                format!(
                    "seq {} does not follow the event before it (line {}): an event was inserted or replaced",
                    e.seq, p.line
                ),
            )
        };
        report.problems.push(problem(kind, message));
        break;
    }
    Ok(report)
}

/// Human-readable summary for the CLI.
pub fn describe(report: &Report, files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|f| display(f)).collect();
    let mut out = format!(
        "{} event(s) in {} file(s) ({}), seq {}..{}\n",
        report.events,
        files.len(),
        names.join(", "),
        report.first_seq.map_or("-".into(), |s| s.to_string()),
        report.last_seq.map_or("-".into(), |s| s.to_string()),
    );
    if report.problems.is_empty() {
        out.push_str("chain intact\n");
    }
    for p in &report.problems {
        out.push_str(&format!(
            "{:?} at {}:{} (seq {}): {}\n",
            p.kind,
            display(&p.file),
            p.line,
            p.seq.map_or("-".into(), |s| s.to_string()),
            p.message
        ));
    }
    out
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
