//! Typed terraform command lines.
//!
//! Architecture invariant: a caller-supplied string only ever appears in argv after an `=` of a
//! flag the server chose (`-target=ADDR`), or as an absolute path the server built. So no value a
//! caller sends can become a flag, whatever it starts with.

use std::ffi::OsString;
use std::path::PathBuf;

/// One argv element, by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A fixed flag chosen by the server, such as `-no-color`.
    Flag(&'static str),
    /// A fixed flag with a value: rendered as one element, `-name=value`.
    Value(&'static str, String),
    /// A flag whose value is a server-built absolute path: `-name=/abs/path`.
    PathValue(&'static str, PathBuf),
    /// A positional server-built absolute path (a plan file).
    Path(PathBuf),
}

/// The terraform subcommands the server runs. What each may do is decided here, by exhaustive
/// matches: a new subcommand cannot run until someone decides whether it may reach the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subcommand {
    Apply,
    Fmt,
    Graph,
    Init,
    Output,
    Plan,
    Providers,
    Show,
    Validate,
    Version,
}

impl Subcommand {
    pub fn as_str(self) -> &'static str {
        match self {
            Subcommand::Version => "version",
            Subcommand::Init => "init",
            Subcommand::Validate => "validate",
            Subcommand::Fmt => "fmt",
            Subcommand::Plan => "plan",
            Subcommand::Show => "show",
            Subcommand::Apply => "apply",
            Subcommand::Output => "output",
            Subcommand::Graph => "graph",
            Subcommand::Providers => "providers",
        }
    }

    /// Whether the run may reach the network (through the sandbox's allowed ports): installing
    /// providers and modules, and providers talking to their APIs while planning and applying.
    /// Everything else runs in an empty network namespace.
    pub fn needs_network(self) -> bool {
        match self {
            Subcommand::Init | Subcommand::Plan | Subcommand::Apply => true,
            Subcommand::Version
            | Subcommand::Validate
            | Subcommand::Fmt
            | Subcommand::Show
            | Subcommand::Output
            | Subcommand::Graph
            | Subcommand::Providers => false,
        }
    }

    /// Whether the run may write the shared provider plugin cache (only `init` installs).
    pub fn writes_plugin_cache(self) -> bool {
        match self {
            Subcommand::Init => true,
            Subcommand::Version
            | Subcommand::Validate
            | Subcommand::Fmt
            | Subcommand::Plan
            | Subcommand::Show
            | Subcommand::Apply
            | Subcommand::Output
            | Subcommand::Graph
            | Subcommand::Providers => false,
        }
    }
}

impl std::fmt::Display for Subcommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A terraform subcommand and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub subcommand: Subcommand,
    pub args: Vec<Arg>,
}

impl Invocation {
    pub fn new(subcommand: Subcommand) -> Invocation {
        Invocation {
            subcommand,
            args: Vec::new(),
        }
    }

    pub fn flag(mut self, f: &'static str) -> Self {
        self.args.push(Arg::Flag(f));
        self
    }

    pub fn flag_if(self, cond: bool, f: &'static str) -> Self {
        if cond { self.flag(f) } else { self }
    }

    pub fn value(mut self, name: &'static str, v: impl Into<String>) -> Self {
        self.args.push(Arg::Value(name, v.into()));
        self
    }

    pub fn path_value(mut self, name: &'static str, p: PathBuf) -> Self {
        self.args.push(Arg::PathValue(name, p));
        self
    }

    pub fn path(mut self, p: PathBuf) -> Self {
        self.args.push(Arg::Path(p));
        self
    }

    /// Renders argv (without the program name).
    ///
    /// Panics in debug builds if a positional path is relative: that would let a path that
    /// starts with `-` be read as a flag, and only server code builds these.
    pub fn argv(&self) -> Vec<OsString> {
        let mut out = Vec::with_capacity(self.args.len() + 1);
        out.push(OsString::from(self.subcommand.as_str()));
        for a in &self.args {
            match a {
                Arg::Flag(f) => out.push(OsString::from(format!("-{f}"))),
                Arg::Value(name, v) => out.push(OsString::from(format!("-{name}={v}"))),
                Arg::PathValue(name, p) => {
                    debug_assert!(p.is_absolute());
                    let mut s = OsString::from(format!("-{name}="));
                    s.push(p.as_os_str());
                    out.push(s);
                }
                Arg::Path(p) => {
                    debug_assert!(p.is_absolute());
                    out.push(p.as_os_str().to_owned());
                }
            }
        }
        out
    }

    /// A short description for logs and audit events: the flags, without values that might be
    /// sensitive (addresses are fine, but var file paths and plan paths are server internals).
    pub fn describe(&self) -> String {
        let mut s = format!("terraform {}", self.subcommand);
        for a in &self.args {
            match a {
                Arg::Flag(f) => s.push_str(&format!(" -{f}")),
                Arg::Value(name, _) | Arg::PathValue(name, _) => s.push_str(&format!(" -{name}=…")),
                Arg::Path(_) => s.push_str(" <file>"),
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_stay_values() {
        let inv = Invocation::new(Subcommand::Plan)
            .flag("no-color")
            .value("target", "-destroy")
            .value("target", "x -chdir=/")
            .path(PathBuf::from("/state/plans/p.tfplan"));
        let argv: Vec<String> = inv
            .argv()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            argv,
            vec![
                "plan",
                "-no-color",
                "-target=-destroy",
                "-target=x -chdir=/",
                "/state/plans/p.tfplan"
            ]
        );
        // Every element after the subcommand is either a server flag or an absolute path.
        for a in &argv[1..] {
            assert!(
                a.starts_with("-no-color") || a.starts_with("-target=") || a.starts_with('/'),
                "{a}"
            );
        }
    }

    #[test]
    fn describe_hides_values() {
        let inv = Invocation::new(Subcommand::Plan).value("target", "aws_instance.secret_name");
        assert_eq!(inv.describe(), "terraform plan -target=…");
    }
}
