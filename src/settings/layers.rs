//! Where a setting's value comes from, lowest precedence first: its default, the TOML file, the
//! environment. Either layer may give `NAME_FILE` (TOML: `name_file`) instead of the value — a
//! file holding it, the Docker/Kubernetes secrets convention; giving both is an error, because
//! silently picking one hides a deployment mistake. Every value, whichever layer it came from, is
//! parsed by the same code for its [`Kind`], so a setting works the same in all of them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::defs::{self, Def, Kind};
use super::{ConfigError, Secret};

/// A value as given, before it is parsed for its kind.
enum Raw {
    One(String),
    /// A TOML array: items are kept whole (an environment value is split instead).
    Many(Vec<String>),
}

/// A setting's value and where it came from (for messages).
struct Given {
    raw: Raw,
    label: String,
}

/// A name no definition knows, and the one that was probably meant.
#[derive(Debug, Clone)]
pub(crate) struct Unknown {
    pub name: String,
    /// "the environment" or the TOML file's path.
    pub source: String,
    pub suggestion: Option<String>,
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown setting {} in {}", self.name, self.source)?;
        match &self.suggestion {
            Some(s) => write!(f, "; did you mean {s}?"),
            None => write!(f, "; the README's configuration table lists every setting"),
        }
    }
}

/// The environment snapshot and the TOML file, read through the definitions.
pub(super) struct Layers<'a> {
    env: &'a BTreeMap<String, String>,
    /// Below the file: values the command decides (by environment name).
    fallbacks: &'a BTreeMap<String, String>,
    file: BTreeMap<String, toml::Value>,
    file_path: Option<PathBuf>,
    cwd: &'a Path,
    /// Files read through `NAME_FILE`: configuration, so checked against the untrusted trees.
    read_files: RefCell<Vec<PathBuf>>,
}

impl<'a> Layers<'a> {
    /// Reads the TOML file the environment names (`TERRARIUM_CONFIG`, set by the sources check
    /// when `--config` or an allowed implicit `terrarium.toml` applies).
    pub(super) fn new(
        env: &'a BTreeMap<String, String>,
        fallbacks: &'a BTreeMap<String, String>,
        cwd: &'a Path,
    ) -> Result<Layers<'a>, ConfigError> {
        let mut layers = Layers {
            env,
            fallbacks,
            file: BTreeMap::new(),
            file_path: None,
            cwd,
            read_files: RefCell::new(Vec::new()),
        };
        if let Some(p) = env.get(defs::CONFIG.name).filter(|s| !s.is_empty()) {
            let path = absolutize(Path::new(p), cwd);
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
            // The parser's own text quotes the offending line, which may hold a credential:
            // only its message and the line number are reported.
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: match e.span() {
                    Some(span) => format!(
                        "line {}: {}",
                        text[..span.start.min(text.len())].lines().count().max(1),
                        e.message()
                    ),
                    None => e.message().to_string(),
                },
            })?;
            layers.file = table.into_iter().collect();
            layers.file_path = Some(path);
        }
        Ok(layers)
    }

    fn file_label(&self, key: &str) -> String {
        let path = self
            .file_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!("`{key}` in {path}")
    }

    fn read_indirect(&self, label: &str, path: &str) -> Result<String, ConfigError> {
        let path = absolutize(Path::new(path), self.cwd);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
            name: label.to_string(),
            path: path.clone(),
            source,
        })?;
        self.read_files.borrow_mut().push(path);
        Ok(text.trim_end_matches(['\n', '\r']).to_string())
    }

    /// The value given for `d`, from the environment first, then the file.
    fn given(&self, d: &Def) -> Result<Option<Given>, ConfigError> {
        let file_name = format!("{}_FILE", d.name);
        match (self.env.get(d.name), self.env.get(&file_name)) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Ambiguous {
                    name: d.name.to_string(),
                });
            }
            (Some(v), None) => {
                return Ok(Some(Given {
                    raw: Raw::One(v.clone()),
                    label: d.name.to_string(),
                }));
            }
            (None, Some(path)) => {
                return Ok(Some(Given {
                    raw: Raw::One(self.read_indirect(&file_name, path)?),
                    label: file_name,
                }));
            }
            (None, None) => {}
        }
        let fallback = || {
            self.fallbacks.get(d.name).map(|v| Given {
                raw: Raw::One(v.clone()),
                label: d.name.to_string(),
            })
        };
        if !d.in_file {
            return Ok(fallback());
        }
        let key = d.file_key();
        let key_file = format!("{key}_file");
        match (self.file.get(&key), self.file.get(&key_file)) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                name: self.file_label(&key),
                message: format!("both `{key}` and `{key_file}` are set; set only one of them"),
            }),
            (Some(v), None) => {
                let label = self.file_label(&key);
                Ok(Some(Given {
                    raw: toml_raw(v).map_err(|m| invalid(&label, m))?,
                    label,
                }))
            }
            (None, Some(v)) => {
                let label = self.file_label(&key_file);
                let path = v
                    .as_str()
                    .ok_or_else(|| invalid(&label, "expected a file path"))?;
                Ok(Some(Given {
                    raw: Raw::One(self.read_indirect(&label, path)?),
                    label,
                }))
            }
            (None, None) => Ok(fallback()),
        }
    }

    /// The one value of `d` (given, else its default), `None` when empty.
    fn one(&self, d: &Def) -> Result<Option<(String, String)>, ConfigError> {
        let given = self.given(d)?;
        let (value, label) = match given {
            Some(Given {
                raw: Raw::One(v),
                label,
            }) => (v, label),
            Some(Given {
                raw: Raw::Many(_),
                label,
            }) => return Err(invalid(&label, "expected one value, not a list")),
            None => (d.default_value().unwrap_or("").to_string(), d.name.into()),
        };
        if value.trim().is_empty() {
            // An empty value means "not set": the default applies.
            return match d.default_value().filter(|v| !v.is_empty()) {
                Some(v) => Ok(Some((v.to_string(), d.name.into()))),
                None => Ok(None),
            };
        }
        Ok(Some((value, label)))
    }

    /// Text (or a path, or a secret), `None` when neither given nor defaulted.
    pub(super) fn text(&self, d: &Def) -> Result<Option<String>, ConfigError> {
        Ok(self.one(d)?.map(|(v, _)| v))
    }

    /// Text with a default (a setting whose default is a value).
    pub(super) fn string(&self, d: &Def) -> Result<String, ConfigError> {
        Ok(self.text(d)?.unwrap_or_default())
    }

    pub(super) fn secret(&self, d: &Def) -> Result<Secret, ConfigError> {
        debug_assert_eq!(d.kind, Kind::Secret);
        Ok(Secret::new(self.string(d)?))
    }

    /// A path, absolute (relative ones are taken from the current directory).
    pub(super) fn path(&self, d: &Def) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self
            .text(d)?
            .map(|p| absolutize(Path::new(p.trim()), self.cwd)))
    }

    pub(super) fn bool(&self, d: &Def) -> Result<bool, ConfigError> {
        let Some((v, label)) = self.one(d)? else {
            return Ok(false);
        };
        match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(invalid(
                &label,
                format!("expected true or false, got {v:?}"),
            )),
        }
    }

    /// A whole number in the definition's range; `None` when not given and derived.
    pub(super) fn int(&self, d: &Def) -> Result<Option<u64>, ConfigError> {
        let Kind::Int { min, max } = d.kind else {
            unreachable!("{} is not a number setting", d.name)
        };
        let Some((v, label)) = self.one(d)? else {
            return Ok(None);
        };
        let n: u64 = v.trim().parse().map_err(|_| {
            invalid(
                &label,
                format!("expected a whole number, got {}", shown(&v, &label)),
            )
        })?;
        if !(min..=max).contains(&n) {
            let range = if max >= u64::from(u32::MAX) {
                format!("must be at least {min}")
            } else {
                format!("must be between {min} and {max}")
            };
            return Err(invalid(&label, range));
        }
        Ok(Some(n))
    }

    /// A number whose default is a value (never `None`).
    pub(super) fn number<T: TryFrom<u64>>(&self, d: &Def) -> Result<T, ConfigError> {
        let n = self.int(d)?.unwrap_or(0);
        T::try_from(n).map_err(|_| invalid(d.name, format!("{n} is too large")))
    }

    /// Seconds, as a duration.
    pub(super) fn secs(&self, d: &Def) -> Result<std::time::Duration, ConfigError> {
        Ok(std::time::Duration::from_secs(self.number(d)?))
    }

    /// The items of a list; `None` when neither given nor defaulted.
    pub(super) fn list_opt(&self, d: &Def) -> Result<Option<Vec<String>>, ConfigError> {
        let split = |v: &str| -> Vec<String> {
            v.split([',', ' ', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        Ok(match self.given(d)? {
            Some(Given {
                raw: Raw::One(v), ..
            }) => Some(split(&v)),
            Some(Given {
                raw: Raw::Many(v), ..
            }) => Some(v),
            None => d.default_value().map(split),
        })
    }

    pub(super) fn list(&self, d: &Def) -> Result<Vec<String>, ConfigError> {
        Ok(self.list_opt(d)?.unwrap_or_default())
    }

    /// Each item of a list parsed; the message names the setting and the item.
    pub(super) fn parsed_list<T: std::str::FromStr>(
        &self,
        d: &Def,
        what: &str,
    ) -> Result<Vec<T>, ConfigError> {
        let label = self.label(d);
        self.list(d)?
            .iter()
            .map(|s| {
                s.parse::<T>()
                    .map_err(|_| invalid(&label, format!("{s:?} is not {what}")))
            })
            .collect()
    }

    /// The file named by `NAME_FILE` (or `name_file`) for `d`, when that is how it was given.
    pub(super) fn indirect_file(&self, d: &Def) -> Option<PathBuf> {
        let from_env = self.env.get(&format!("{}_FILE", d.name));
        let from_file = || {
            self.file
                .get(&format!("{}_file", d.file_key()))
                .and_then(toml::Value::as_str)
                .filter(|_| d.in_file && !self.env.contains_key(d.name))
        };
        from_env
            .map(String::as_str)
            .or_else(from_file)
            .map(|p| absolutize(Path::new(p), self.cwd))
    }

    /// Where `d`'s value came from, for a message about it.
    pub(super) fn label(&self, d: &Def) -> String {
        let file_name = format!("{}_FILE", d.name);
        if self.env.contains_key(d.name) {
            return d.name.to_string();
        }
        if self.env.contains_key(&file_name) {
            return file_name;
        }
        let key = d.file_key();
        if d.in_file && self.file.contains_key(&key) {
            return format!("{} ({})", d.name, self.file_label(&key));
        }
        d.name.to_string()
    }

    /// The files the configuration named: every `NAME_FILE` read and every configuration-file
    /// setting's value (they must all lie outside the untrusted trees).
    pub(super) fn named_files(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let mut files = self.read_files.borrow().clone();
        for d in defs::ALL.iter().filter(|d| d.kind == Kind::ConfigFile) {
            files.extend(self.path(d)?);
        }
        Ok(files)
    }

    /// Names in the environment (`TERRARIUM_*`) and keys in the file that no setting has.
    pub(super) fn unknown(&self) -> Vec<Unknown> {
        let known_env = |name: &str| {
            defs::by_name(name).is_some()
                || name
                    .strip_suffix("_FILE")
                    .is_some_and(|n| defs::by_name(n).is_some())
        };
        let mut out = Vec::new();
        for name in self.env.keys() {
            if name.starts_with(defs::PREFIX) && !known_env(name) {
                let base = name.strip_suffix("_FILE").unwrap_or(name);
                out.push(Unknown {
                    name: name.clone(),
                    source: "the environment".into(),
                    suggestion: defs::closest(base, defs::ALL.iter().map(|d| d.name))
                        .map(String::from),
                });
            }
        }
        let file_keys: Vec<String> = defs::ALL
            .iter()
            .filter(|d| d.in_file)
            .map(|d| d.file_key())
            .collect();
        for key in self.file.keys() {
            let known = defs::by_file_key(key).is_some()
                || key
                    .strip_suffix("_file")
                    .is_some_and(|k| defs::by_file_key(k).is_some());
            if !known {
                let base = key.strip_suffix("_file").unwrap_or(key);
                out.push(Unknown {
                    name: format!("`{key}`"),
                    source: self
                        .file_path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    suggestion: defs::closest(base, file_keys.iter().map(String::as_str))
                        .map(|k| format!("`{k}`")),
                });
            }
        }
        out
    }
}

/// A rejected value as a message may quote it: not when it was read through a file (a
/// `NAME_FILE` pointing at the wrong file could be pointing at a key).
fn shown(value: &str, label: &str) -> String {
    if label.ends_with("_FILE") || label.contains("_file`") {
        format!("the content of that file ({} bytes)", value.len())
    } else {
        format!("{value:?}")
    }
}

fn invalid(label: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: label.to_string(),
        message: message.into(),
    }
}

/// A TOML value in the form the parsers take: scalars as their text, arrays item by item.
fn toml_raw(v: &toml::Value) -> Result<Raw, String> {
    fn scalar(v: &toml::Value) -> Option<String> {
        match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            _ => None,
        }
    }
    match v {
        toml::Value::Array(items) => items
            .iter()
            .map(|i| scalar(i).ok_or_else(|| "expected a list of plain values".to_string()))
            .collect::<Result<_, _>>()
            .map(Raw::Many),
        other => scalar(other)
            .map(Raw::One)
            .ok_or_else(|| "expected a string, number, boolean or list".to_string()),
    }
}

pub(super) fn absolutize(p: &Path, cwd: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        let base = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
        base.join(p)
    }
}
