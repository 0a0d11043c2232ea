//! Saved plans: made by `terraform_plan`, applied once by `terraform_apply`.
//!
//! A plan lives in the server's state dir, outside the workspace root, as `<id>.tfplan` with a
//! `<id>.json` record of its workspace, creation time, sha256 and summary. Applying takes the
//! record away first (an atomic rename), so a plan id is good for exactly one apply even when
//! two calls race, and the bytes applied are the bytes that were hashed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::terraform::plan_summary::PlanSummary;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("plan_id: no such plan (it was never made here, was already applied, or was removed)")]
    Unknown,
    #[error("plan_id: the plan was made for workspace {planned}, not {requested}")]
    WrongWorkspace { planned: String, requested: String },
    #[error(
        "plan_id: the plan expired {ago}s ago (plans may be applied for {ttl}s); run terraform_plan again"
    )]
    Expired { ago: u64, ttl: u64 },
    #[error(
        "plan_id: the saved plan file changed since it was made (sha256 mismatch); run terraform_plan again"
    )]
    Tampered,
    #[error("plan store: {0}")]
    Io(#[from] std::io::Error),
    #[error("plan store: corrupt plan record: {0}")]
    Corrupt(String),
}

/// The record kept beside a saved plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanRecord {
    pub plan_id: String,
    /// Workspace path relative to the root.
    pub workspace: String,
    pub created_at: u64,
    pub sha256: String,
    pub summary: PlanSummary,
}

/// A plan taken out of the store for applying: its verified bytes.
pub struct TakenPlan {
    pub record: PlanRecord,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct PlanStore {
    dir: PathBuf,
    ttl: Duration,
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl PlanStore {
    pub fn open(state_dir: &Path, ttl: Duration) -> std::io::Result<PlanStore> {
        let dir = state_dir.join("plans");
        create_private_dir(&dir)?;
        Ok(PlanStore { dir, ttl })
    }

    /// Where a saved plan is kept.
    pub fn plan_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.tfplan"))
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Saves a plan terraform wrote into its run dir (terraform itself never sees the store:
    /// its sandbox gives it no access to other plans).
    pub fn record(
        &self,
        id: &str,
        workspace: &str,
        summary: PlanSummary,
        written: &Path,
    ) -> Result<PlanRecord, PlanError> {
        let bytes = std::fs::read(written)?;
        write_private(&self.plan_path(id), &bytes)?;
        let record = PlanRecord {
            plan_id: id.to_string(),
            workspace: workspace.to_string(),
            created_at: now(),
            sha256: sha256_hex(&bytes),
            summary,
        };
        let tmp = self.dir.join(format!("{id}.json.tmp"));
        let text = serde_json::to_vec(&record).map_err(|e| PlanError::Corrupt(e.to_string()))?;
        write_private(&tmp, &text)?;
        std::fs::rename(&tmp, self.record_path(id))?;
        Ok(record)
    }

    /// Reads a plan's record without consuming it (for `terraform_show`).
    pub fn get(&self, id: &str, workspace: &str) -> Result<PlanRecord, PlanError> {
        let record = read_record(&self.record_path(id))?;
        self.check(&record, workspace)?;
        Ok(record)
    }

    /// Verifies a plan without consuming it (before an apply is authorized, so a refused
    /// apply leaves the plan usable; and for `terraform_show`). Returns the verified bytes.
    pub fn verify(&self, id: &str, workspace: &str) -> Result<(PlanRecord, Vec<u8>), PlanError> {
        let record = self.get(id, workspace)?;
        let bytes = std::fs::read(self.plan_path(id)).map_err(|_| PlanError::Unknown)?;
        if sha256_hex(&bytes) != record.sha256 {
            return Err(PlanError::Tampered);
        }
        Ok((record, bytes))
    }

    /// Consumes a plan: after this no other call can take it. The returned bytes are hashed
    /// again here, after the record is gone, so what is applied is what was verified.
    pub fn take(&self, id: &str, workspace: &str) -> Result<TakenPlan, PlanError> {
        let claimed = self.dir.join(format!("{id}.json.taken-{}", new_id()));
        std::fs::rename(self.record_path(id), &claimed).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PlanError::Unknown,
            _ => PlanError::Io(e),
        })?;
        let result = (|| {
            let record = read_record(&claimed)?;
            self.check(&record, workspace)?;
            let bytes = std::fs::read(self.plan_path(id)).map_err(|_| PlanError::Unknown)?;
            if sha256_hex(&bytes) != record.sha256 {
                return Err(PlanError::Tampered);
            }
            Ok(TakenPlan { record, bytes })
        })();
        let _ = std::fs::remove_file(&claimed);
        let _ = std::fs::remove_file(self.plan_path(id));
        result
    }

    fn check(&self, record: &PlanRecord, workspace: &str) -> Result<(), PlanError> {
        if record.workspace != workspace {
            return Err(PlanError::WrongWorkspace {
                planned: record.workspace.clone(),
                requested: workspace.to_string(),
            });
        }
        let age = now().saturating_sub(record.created_at);
        if age > self.ttl.as_secs() {
            return Err(PlanError::Expired {
                ago: age - self.ttl.as_secs(),
                ttl: self.ttl.as_secs(),
            });
        }
        Ok(())
    }

    /// Deletes expired plans; called at start-up and after each plan.
    pub fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let cutoff = self.ttl.as_secs() + 60;
        for e in entries.flatten() {
            let path = e.path();
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > cutoff);
            if old {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

fn read_record(path: &Path) -> Result<PlanRecord, PlanError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PlanError::Unknown,
        _ => PlanError::Io(e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| PlanError::Corrupt(e.to_string()))
}

pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes a file only the server's user can read, durably (fsync): for records that must
/// survive a crash.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_private_file(path, bytes)?.sync_all()
}

/// Writes a file only the server's user can read, without fsync: for per-run scratch files
/// that are worthless after a crash.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terraform::plan_summary::summarize;

    fn summary() -> PlanSummary {
        summarize(&serde_json::json!({"format_version": "1.2"}), false).unwrap()
    }

    fn store(ttl: u64) -> (tempfile::TempDir, PlanStore) {
        let d = tempfile::tempdir().unwrap();
        let s = PlanStore::open(d.path(), Duration::from_secs(ttl)).unwrap();
        (d, s)
    }

    #[test]
    fn a_plan_is_taken_once() {
        let (_d, s) = store(60);
        let id = new_id();
        let written = s.dir.join("written.tfplan");
        std::fs::write(&written, b"plan bytes").unwrap();
        s.record(&id, "ws", summary(), &written).unwrap();
        assert_eq!(s.verify(&id, "ws").unwrap().1, b"plan bytes");
        let taken = s.take(&id, "ws").unwrap();
        assert_eq!(taken.bytes, b"plan bytes");
        assert!(matches!(s.take(&id, "ws"), Err(PlanError::Unknown)));
    }

    #[test]
    fn tampered_plans_are_refused() {
        let (_d, s) = store(60);
        let id = new_id();
        let written = s.dir.join("written.tfplan");
        std::fs::write(&written, b"plan bytes").unwrap();
        s.record(&id, "ws", summary(), &written).unwrap();
        std::fs::write(s.plan_path(&id), b"other bytes").unwrap();
        assert!(matches!(s.verify(&id, "ws"), Err(PlanError::Tampered)));
        assert!(matches!(s.take(&id, "ws"), Err(PlanError::Tampered)));
    }

    #[test]
    fn wrong_workspace_and_expiry() {
        let (_d, s) = store(0);
        let id = new_id();
        let written = s.dir.join("written.tfplan");
        std::fs::write(&written, b"p").unwrap();
        let mut rec = s.record(&id, "ws", summary(), &written).unwrap();
        assert!(matches!(
            s.get(&id, "other"),
            Err(PlanError::WrongWorkspace { .. })
        ));
        rec.created_at -= 10;
        std::fs::write(s.record_path(&id), serde_json::to_vec(&rec).unwrap()).unwrap();
        assert!(matches!(s.get(&id, "ws"), Err(PlanError::Expired { .. })));
    }
}
