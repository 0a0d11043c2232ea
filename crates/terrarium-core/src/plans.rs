//! Saved plans: made by `terraform_plan`, applied once by `terraform_apply`.
//!
//! A plan lives in the server's state dir, outside the workspace root, as `<id>.tfplan` with a
//! `<id>.json` record of its workspace, creation time, sha256 and summary. Applying takes the
//! record away first (an atomic rename), so a plan id is good for exactly one apply even when
//! two calls race, and the bytes applied are the bytes that were hashed.
//!
//! A plan belongs to the principal (and transport) that made it: it was made with that caller's
//! variables, so another remote caller may neither show nor apply it unless the policy says so
//! (`apply_others_plans`, `show_others_plans`); the check comes before anything else about the
//! plan is revealed. Beside the plan, `<id>.secrets.json` keeps the values that were secret in
//! the call that made it, so every later call that shows or applies it redacts them, and
//! `<id>.plan.json` the full JSON plan once something needed it (made at most once per plan).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::files::{create_private_dir, write_private};
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
    #[error(
        "plan_id: the saved plan file does not do what its summary says (code in the workspace replaced it while the plan ran); it is not applied: run terraform_plan again"
    )]
    Mismatch,
    #[error(
        "plan_id: this plan was made by another caller; {principal} may show and apply only its own plans (the server's policy can allow more with apply_others_plans or show_others_plans under principals.{principal})"
    )]
    NotYours { principal: String },
    #[error("plan store: {0}")]
    Io(#[from] std::io::Error),
    #[error("plan store: corrupt plan record: {0}")]
    Corrupt(String),
}

/// Who made a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOwner {
    pub principal: String,
    pub transport: String,
}

/// Who asks for a plan, and whether the policy lets them use plans other callers made.
#[derive(Debug, Clone)]
pub struct Requester {
    pub caller: PlanOwner,
    pub others_allowed: bool,
}

impl Requester {
    fn may_use(&self, owner: Option<&PlanOwner>) -> bool {
        self.others_allowed || owner == Some(&self.caller)
    }
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
    /// Who made it (absent in records from before owners were kept: then nobody owns it, and
    /// only callers allowed to use others' plans may).
    #[serde(default)]
    pub owner: Option<PlanOwner>,
}

/// A verified plan, not consumed: its record, bytes, and the secrets of the call that made it.
pub struct VerifiedPlan {
    pub record: PlanRecord,
    pub bytes: Vec<u8>,
    pub secrets: Vec<String>,
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

    fn secrets_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.secrets.json"))
    }

    fn full_plan_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.plan.json"))
    }

    /// The full JSON plan (`terraform show -json`) saved for a plan, when one was made. Callers
    /// have verified the plan first; the file is the server's own, written only by
    /// [`PlanStore::store_full_plan`].
    pub fn full_plan(&self, id: &str) -> Result<Option<Vec<u8>>, PlanError> {
        match std::fs::read(self.full_plan_path(id)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PlanError::Io(e)),
        }
    }

    /// Saves a plan's full JSON plan, and the secrets known once it was read (they replace the
    /// plan's secrets: a superset of the call's that made it). The secrets are written first, so
    /// a cached JSON plan always has its secrets beside it.
    pub fn store_full_plan(
        &self,
        id: &str,
        json: &[u8],
        secrets: &[String],
    ) -> Result<(), PlanError> {
        let mut all = self.secrets(id)?;
        for s in secrets {
            if !all.contains(s) {
                all.push(s.clone());
            }
        }
        let text = serde_json::to_vec(&all).map_err(|e| PlanError::Corrupt(e.to_string()))?;
        let tmp = self.dir.join(format!("{id}.secrets.json.tmp-{}", new_id()));
        write_private(&tmp, &text)?;
        std::fs::rename(&tmp, self.secrets_path(id))?;
        let tmp = self.dir.join(format!("{id}.plan.json.tmp-{}", new_id()));
        write_private(&tmp, json)?;
        std::fs::rename(&tmp, self.full_plan_path(id))?;
        Ok(())
    }

    /// Saves a plan terraform wrote into its run dir (terraform itself never sees the store:
    /// its sandbox gives it no access to other plans), with its owner and the values that were
    /// secret in the call that made it. The record is written last, so a plan that can be found
    /// always has its secrets beside it.
    pub fn record(
        &self,
        id: &str,
        workspace: &str,
        owner: PlanOwner,
        summary: PlanSummary,
        bytes: &[u8],
        secrets: &[String],
    ) -> Result<PlanRecord, PlanError> {
        write_private(&self.plan_path(id), bytes)?;
        let secrets = serde_json::to_vec(secrets).map_err(|e| PlanError::Corrupt(e.to_string()))?;
        write_private(&self.secrets_path(id), &secrets)?;
        let record = PlanRecord {
            plan_id: id.to_string(),
            workspace: workspace.to_string(),
            created_at: now(),
            sha256: sha256_hex(bytes),
            summary,
            owner: Some(owner),
        };
        let tmp = self.dir.join(format!("{id}.json.tmp"));
        let text = serde_json::to_vec(&record).map_err(|e| PlanError::Corrupt(e.to_string()))?;
        write_private(&tmp, &text)?;
        std::fs::rename(&tmp, self.record_path(id))?;
        self.sweep();
        Ok(record)
    }

    /// Reads a plan's record without consuming it.
    pub fn get(&self, id: &str, workspace: &str, who: &Requester) -> Result<PlanRecord, PlanError> {
        let record = read_record(&self.record_path(id))?;
        self.check(&record, workspace, who)?;
        Ok(record)
    }

    /// Verifies a plan without consuming it (before an apply is authorized, so a refused
    /// apply leaves the plan usable; and for `terraform_show`). Returns the verified bytes and
    /// the plan's secrets.
    pub fn verify(
        &self,
        id: &str,
        workspace: &str,
        who: &Requester,
    ) -> Result<VerifiedPlan, PlanError> {
        let record = self.get(id, workspace, who)?;
        let bytes = std::fs::read(self.plan_path(id)).map_err(|_| PlanError::Unknown)?;
        if sha256_hex(&bytes) != record.sha256 {
            return Err(PlanError::Tampered);
        }
        let secrets = self.secrets(id)?;
        Ok(VerifiedPlan {
            record,
            bytes,
            secrets,
        })
    }

    /// The values that were secret in the call that made a plan (none for plans recorded
    /// before they were kept).
    fn secrets(&self, id: &str) -> Result<Vec<String>, PlanError> {
        match std::fs::read(self.secrets_path(id)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|_| PlanError::Corrupt("the plan's secrets file is not valid".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(PlanError::Io(e)),
        }
    }

    /// Consumes a plan: after this no other call can take it. The returned bytes are hashed
    /// again here, after the record is gone, so what is applied is what was verified. A caller
    /// the plan is not for (another owner, another workspace) puts the record back untouched.
    pub fn take(&self, id: &str, workspace: &str, who: &Requester) -> Result<TakenPlan, PlanError> {
        let claimed = self.dir.join(format!("{id}.json.taken-{}", new_id()));
        std::fs::rename(self.record_path(id), &claimed).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PlanError::Unknown,
            _ => PlanError::Io(e),
        })?;
        let result = (|| {
            let record = read_record(&claimed)?;
            self.check(&record, workspace, who)?;
            let bytes = std::fs::read(self.plan_path(id)).map_err(|_| PlanError::Unknown)?;
            if sha256_hex(&bytes) != record.sha256 {
                return Err(PlanError::Tampered);
            }
            Ok(TakenPlan { record, bytes })
        })();
        if matches!(
            result,
            Err(PlanError::NotYours { .. } | PlanError::WrongWorkspace { .. })
        ) && std::fs::rename(&claimed, self.record_path(id)).is_ok()
        {
            return result;
        }
        let _ = std::fs::remove_file(&claimed);
        let _ = std::fs::remove_file(self.plan_path(id));
        let _ = std::fs::remove_file(self.secrets_path(id));
        let _ = std::fs::remove_file(self.full_plan_path(id));
        result
    }

    fn check(
        &self,
        record: &PlanRecord,
        workspace: &str,
        who: &Requester,
    ) -> Result<(), PlanError> {
        // First, so that nothing about someone else's plan (its workspace, its age) is told.
        if !who.may_use(record.owner.as_ref()) {
            return Err(PlanError::NotYours {
                principal: who.caller.principal.clone(),
            });
        }
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

    /// Deletes expired plans (and claimed records left by a crash): at start-up and after each
    /// recorded plan, so a long-running server does not pile them up.
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

    fn owner(name: &str) -> PlanOwner {
        PlanOwner {
            principal: name.into(),
            transport: "http".into(),
        }
    }

    fn asks(name: &str) -> Requester {
        Requester {
            caller: owner(name),
            others_allowed: false,
        }
    }

    fn make(s: &PlanStore, id: &str, bytes: &[u8]) -> PlanRecord {
        s.record(
            id,
            "ws",
            owner("alice"),
            summary(),
            bytes,
            &["pw-0123456789".to_string()],
        )
        .unwrap()
    }

    #[test]
    fn recording_a_plan_sweeps_expired_ones() {
        let (_d, s) = store(600);
        make(&s, "old", b"old plan");
        // Age the old plan's files past the TTL (and the sweep's minute of slack).
        let past = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
        let mut aged = 0;
        for e in std::fs::read_dir(&s.dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("old") {
                let f = std::fs::File::options().write(true).open(e.path()).unwrap();
                f.set_modified(past).unwrap();
                aged += 1;
            }
        }
        assert_eq!(aged, 3, "plan, secrets and record");
        make(&s, "new", b"new plan");
        let left: Vec<String> = std::fs::read_dir(&s.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.iter().all(|n| !n.starts_with("old")), "{left:?}");
        assert_eq!(
            left.iter().filter(|n| n.starts_with("new")).count(),
            3,
            "{left:?}"
        );
    }

    #[test]
    fn a_plan_is_taken_once() {
        let (_d, s) = store(60);
        let id = new_id();
        make(&s, &id, b"plan bytes");
        let v = s.verify(&id, "ws", &asks("alice")).unwrap();
        assert_eq!(v.bytes, b"plan bytes");
        assert_eq!(v.secrets, vec!["pw-0123456789".to_string()]);
        let taken = s.take(&id, "ws", &asks("alice")).unwrap();
        assert_eq!(taken.bytes, b"plan bytes");
        assert!(matches!(
            s.take(&id, "ws", &asks("alice")),
            Err(PlanError::Unknown)
        ));
        assert!(!s.secrets_path(&id).exists(), "secrets go with the plan");
    }

    #[test]
    fn plans_belong_to_their_maker() {
        let (_d, s) = store(60);
        let id = new_id();
        make(&s, &id, b"plan bytes");
        for (who, ws) in [("bob", "ws"), ("bob", "other")] {
            let err = s.verify(&id, ws, &asks(who)).err().unwrap();
            assert!(matches!(err, PlanError::NotYours { .. }), "{err}");
            // Neither the workspace nor anything else of the plan is told.
            assert!(!err.to_string().contains("ws"), "{err}");
            assert!(matches!(
                s.take(&id, ws, &asks(who)),
                Err(PlanError::NotYours { .. })
            ));
        }
        // The same name over another transport is someone else.
        let stdio = Requester {
            caller: PlanOwner {
                principal: "alice".into(),
                transport: "stdio".into(),
            },
            others_allowed: false,
        };
        assert!(s.verify(&id, "ws", &stdio).is_err());
        // A refused take leaves the plan usable; a caller allowed others' plans may use it.
        let granted = Requester {
            others_allowed: true,
            ..asks("bob")
        };
        assert!(s.verify(&id, "ws", &granted).is_ok());
        assert!(matches!(
            s.take(&id, "other", &asks("alice")),
            Err(PlanError::WrongWorkspace { .. })
        ));
        assert!(s.take(&id, "ws", &asks("alice")).is_ok());
    }

    #[test]
    fn tampered_plans_are_refused() {
        let (_d, s) = store(60);
        let id = new_id();
        make(&s, &id, b"plan bytes");
        std::fs::write(s.plan_path(&id), b"other bytes").unwrap();
        assert!(matches!(
            s.verify(&id, "ws", &asks("alice")),
            Err(PlanError::Tampered)
        ));
        assert!(matches!(
            s.take(&id, "ws", &asks("alice")),
            Err(PlanError::Tampered)
        ));
    }

    #[test]
    fn wrong_workspace_and_expiry() {
        let (_d, s) = store(0);
        let id = new_id();
        let mut rec = make(&s, &id, b"p");
        assert!(matches!(
            s.get(&id, "other", &asks("alice")),
            Err(PlanError::WrongWorkspace { .. })
        ));
        rec.created_at -= 10;
        std::fs::write(s.record_path(&id), serde_json::to_vec(&rec).unwrap()).unwrap();
        assert!(matches!(
            s.get(&id, "ws", &asks("alice")),
            Err(PlanError::Expired { .. })
        ));
    }

    #[test]
    fn records_without_an_owner_are_nobodys() {
        let (_d, s) = store(60);
        let id = new_id();
        let rec = make(&s, &id, b"p");
        let mut old = serde_json::to_value(&rec).unwrap();
        old.as_object_mut().unwrap().remove("owner");
        std::fs::write(s.record_path(&id), serde_json::to_vec(&old).unwrap()).unwrap();
        assert!(s.get(&id, "ws", &asks("alice")).is_err());
        let local = Requester {
            others_allowed: true,
            ..asks("stdio")
        };
        assert!(s.get(&id, "ws", &local).is_ok());
    }
}
