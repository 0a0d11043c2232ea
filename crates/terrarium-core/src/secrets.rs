//! Secrets that outlive the call that brought them.
//!
//! A secret given to `terraform_plan` does not stay in that call: it is in the saved plan (shown
//! and applied later), and after the apply it is in the workspace's state (`terraform_show`,
//! `terraform_output`, a `terraform_data`'s `output`). So the values a call learned are secret
//! are remembered where what carries them lives: with the saved plan (in the plan store) and with
//! the workspace (here, a set per workspace in the server's state dir, keyed by the workspace's
//! canonical path), and every later call on that plan or workspace loads them into its redactor.
//!
//! The files are private to the server (0600 in a 0700 directory that terraform's sandbox never
//! lets a run reach). They hold nothing a plan file does not already hold in clear: terraform
//! writes variable values into its plan files.
//!
//! Also here: reading the secret-looking variables out of a var file, so a value given through a
//! var file is known before terraform runs (a failing plan can quote it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::files::{create_private_dir, write_private};

/// The most values remembered per workspace; the oldest are forgotten first. Every plan
/// re-adds the values it used, so values still in use stay at the young end.
pub const MAX_WORKSPACE_SECRETS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SecretStoreError {
    #[error(
        "secret store {path}: {source} (the server cannot tell which values to redact for this workspace; fix the file's permissions or remove it)"
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "secret store {path}: the file is not a secret set written by this server (remove it to start afresh)"
    )]
    Corrupt { path: PathBuf },
}

/// The on-disk set of one workspace.
#[derive(Default, Serialize, Deserialize)]
struct SecretFile {
    /// The canonical workspace path, to tell a hash collision or a moved file from the real one.
    workspace: String,
    /// Oldest first.
    values: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
}

impl SecretStore {
    pub fn open(state_dir: &Path) -> std::io::Result<SecretStore> {
        let dir = state_dir.join("secrets");
        create_private_dir(&dir)?;
        Ok(SecretStore { dir })
    }

    fn path_for(&self, workspace: &Path) -> PathBuf {
        let digest = Sha256::digest(workspace.as_os_str().as_encoded_bytes());
        self.dir.join(format!("{}.json", hex::encode(digest)))
    }

    fn read(&self, workspace: &Path) -> Result<SecretFile, SecretStoreError> {
        let path = self.path_for(workspace);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SecretFile::default()),
            Err(source) => return Err(SecretStoreError::Io { path, source }),
        };
        let file: SecretFile = serde_json::from_slice(&bytes)
            .map_err(|_| SecretStoreError::Corrupt { path: path.clone() })?;
        if file.workspace != workspace.to_string_lossy() {
            return Err(SecretStoreError::Corrupt { path });
        }
        Ok(file)
    }

    /// The values remembered for a workspace (by its canonical path).
    pub fn load(&self, workspace: &Path) -> Result<Vec<String>, SecretStoreError> {
        Ok(self.read(workspace)?.values)
    }

    /// Adds values to a workspace's set; writes (atomically, durably) only when something is new.
    /// Callers hold the workspace's lock, so read-modify-write does not race within the server.
    pub fn remember(&self, workspace: &Path, values: &[String]) -> Result<(), SecretStoreError> {
        let mut file = self.read(workspace)?;
        let before = file.values.len();
        for v in values {
            if !file.values.iter().any(|x| x == v) {
                file.values.push(v.clone());
            }
        }
        if file.values.len() == before {
            return Ok(());
        }
        if file.values.len() > MAX_WORKSPACE_SECRETS {
            let drop = file.values.len() - MAX_WORKSPACE_SECRETS;
            file.values.drain(..drop);
        }
        file.workspace = workspace.to_string_lossy().into_owned();
        let path = self.path_for(workspace);
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        let io = |source| SecretStoreError::Io {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| io(std::io::Error::other(e)))?;
        write_private(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }
}

/// The variables a var file assigns, as far as a simple reading can tell: every top-level key of
/// a `.tfvars.json` object, and in a `.tfvars` file every `name = value` at the start of a line
/// whose value is a quoted string, a heredoc, a bare word or number, or a `{...}`/`[...]`
/// (then every quoted string inside it). Used only to learn which values to redact, so a
/// construct it does not understand costs redaction of that value before the plan is shown,
/// never correctness: after the plan, the values terraform itself read are taken from the plan.
pub fn var_file_values(bytes: &[u8], json: bool) -> Map<String, Value> {
    if json {
        return match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
    }
    let text = String::from_utf8_lossy(bytes);
    let mut out = Map::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some((name, rest)) = assignment(line) else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(tag) = rest.strip_prefix("<<") {
            // Heredoc: `<<EOT` or `<<-EOT`, up to the line that is the tag alone.
            let tag = tag.trim_start_matches('-').trim();
            let mut body = Vec::new();
            while i < lines.len() && lines[i].trim() != tag {
                body.push(lines[i].trim());
                body.push(lines[i]);
                i += 1;
            }
            i += 1;
            let strings: Vec<Value> = body.into_iter().map(|l| Value::String(l.into())).collect();
            out.insert(name.to_string(), Value::Array(strings));
        } else if rest.starts_with('"') {
            let (s, _) = quoted(rest);
            out.insert(name.to_string(), Value::String(s));
        } else if rest.starts_with('{') || rest.starts_with('[') {
            // Collect quoted strings (and bare scalars) until the brackets balance.
            let mut depth: i64 = 0;
            let mut strings = Vec::new();
            let mut chunk = rest.to_string();
            loop {
                let mut s = chunk.as_str();
                while let Some(c) = s.chars().next() {
                    match c {
                        '"' => {
                            let (v, used) = quoted(s);
                            strings.push(Value::String(v));
                            s = &s[used..];
                            continue;
                        }
                        '{' | '[' => depth += 1,
                        '}' | ']' => depth -= 1,
                        '#' => break,
                        _ => {}
                    }
                    s = &s[c.len_utf8()..];
                }
                if depth <= 0 || i >= lines.len() {
                    break;
                }
                chunk = lines[i].to_string();
                i += 1;
            }
            out.insert(name.to_string(), Value::Array(strings));
        } else {
            let word = rest
                .split(['#', ' ', '\t', ','])
                .next()
                .unwrap_or_default()
                .trim_end_matches("//");
            out.insert(name.to_string(), Value::String(word.to_string()));
        }
    }
    out
}

/// `name = rest` (or `name: rest`) at the start of a line, with a valid identifier.
fn assignment(line: &str) -> Option<(&str, &str)> {
    let t = line.trim_start();
    let (name, rest) = match t.strip_prefix('"') {
        Some(q) => q.split_once('"')?,
        None => {
            let end = t
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(t.len());
            t.split_at(end)
        }
    };
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':'))?;
    if rest.starts_with('=') {
        return None;
    }
    Some((name, rest))
}

/// An HCL quoted string at the start of `s` (which starts with `"`): its value (unescaped, as
/// terraform uses it) and the bytes used. An unterminated string runs to the end of `s`.
fn quoted(s: &str) -> (String, usize) {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, i + 1),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, e @ ('u' | 'U'))) => {
                    let width = if e == 'U' { 8 } else { 4 };
                    let hex: String = chars.by_ref().take(width).map(|(_, h)| h).collect();
                    if let Some(ch) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                        out.push(ch);
                    }
                }
                Some((_, other)) => out.push(other),
                None => break,
            },
            '$' if s[i..].starts_with("$${") => {
                out.push('$');
                chars.next();
            }
            '%' if s[i..].starts_with("%%{") => {
                out.push('%');
                chars.next();
            }
            c => out.push(c),
        }
    }
    (out, s.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn workspace_sets_survive_and_stay_bounded() {
        let d = tempfile::tempdir().unwrap();
        let s = SecretStore::open(d.path()).unwrap();
        let ws = Path::new("/root/ws");
        assert!(s.load(ws).unwrap().is_empty());
        s.remember(ws, &["alpha-secret".into(), "beta-secret".into()])
            .unwrap();
        s.remember(ws, &["alpha-secret".into()]).unwrap();
        let again = SecretStore::open(d.path()).unwrap();
        assert_eq!(again.load(ws).unwrap(), vec!["alpha-secret", "beta-secret"]);
        assert!(again.load(Path::new("/root/other")).unwrap().is_empty());
        let many: Vec<String> = (0..MAX_WORKSPACE_SECRETS + 5)
            .map(|i| format!("value-{i}"))
            .collect();
        s.remember(ws, &many).unwrap();
        let kept = s.load(ws).unwrap();
        assert_eq!(kept.len(), MAX_WORKSPACE_SECRETS);
        assert_eq!(
            kept.last().unwrap(),
            &format!("value-{}", MAX_WORKSPACE_SECRETS + 4)
        );
        use std::os::unix::fs::PermissionsExt;
        let file = s.path_for(ws);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&file, b"not json").unwrap();
        let err = s.load(ws).unwrap_err().to_string();
        assert!(err.contains("not a secret set"), "{err}");
        assert!(!err.contains("not json"));
    }

    #[test]
    fn json_var_files() {
        let m = var_file_values(br#"{"db_password": "pw-123456", "n": 3}"#, true);
        assert_eq!(m["db_password"], json!("pw-123456"));
        assert!(var_file_values(b"[1]", true).is_empty());
    }

    #[test]
    fn hcl_var_files() {
        let text = r#"
# comment
region      = "eu-west-1"
db_password = "p\"w-\u00e9-$${x}" # trailing
api_token   = 1234567
  "quoted_secret" = "q-secret"
tokens = {
  a = "tok-a-123456"
  b = ["tok-b-123456"]
}
private_key = <<-EOT
  -----BEGIN KEY-----
  abcdef
  EOT
after = "x"
cmp == "no"
"#;
        let m = var_file_values(text.as_bytes(), false);
        assert_eq!(m["region"], json!("eu-west-1"));
        assert_eq!(m["db_password"], json!("p\"w-é-${x}"));
        assert_eq!(m["api_token"], json!("1234567"));
        assert_eq!(m["quoted_secret"], json!("q-secret"));
        assert_eq!(m["tokens"], json!(["tok-a-123456", "tok-b-123456"]));
        let key = m["private_key"].to_string();
        assert!(key.contains("-----BEGIN KEY-----") && key.contains("abcdef"));
        assert_eq!(m["after"], json!("x"));
        assert!(!m.contains_key("cmp"));
    }
}
