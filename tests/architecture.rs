//! The import rules of ARCHITECTURE.md, checked on the source: no module cycle in either
//! crate, and a core that knows no front door.
//!
//! The module graph is the one `cargo modules` draws: a node per module file, an edge per
//! `use` declaration or `crate::`/`super::`/`self::` path (comments and `#[cfg(test)]` modules
//! left out). A parent reaching its own child through the child's name is ownership, not an
//! edge; everything else must point one way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A module's path in its crate: `[]` for the root, `["tools", "plan"]` for `tools/plan.rs`.
type ModPath = Vec<String>;

fn module_files(src: &Path) -> BTreeMap<ModPath, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read src").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some("rs") {
                continue;
            }
            let rel = p.strip_prefix(src).expect("under src");
            let mut parts: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            out.insert(parts, std::fs::read_to_string(&p).expect("read module"));
        }
    }
    out
}

/// The text without comments, string literals and `#[cfg(test)]` items.
fn code_of(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i..].starts_with(b"#[cfg(test)]") {
            // Skip the attribute and the item it guards: up to its `;` or its matching `}`.
            i += "#[cfg(test)]".len();
            let mut depth = 0usize;
            while i < b.len() {
                match b[i] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    b';' if depth == 0 => {
                        i += 1;
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Expands a `use` tree (`crate::{a::{self, b}, c}`) into whole paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    fn go(prefix: &str, t: &str, out: &mut Vec<String>) {
        match t.find('{') {
            None => {
                for part in t.split(',').filter(|p| !p.is_empty()) {
                    let part = part.split(" as ").next().unwrap_or(part);
                    let part = part.split("as").next().unwrap_or(part);
                    let joined = match (prefix.is_empty(), part) {
                        (_, "self") => prefix.trim_end_matches("::").to_string(),
                        (true, p) => p.to_string(),
                        (false, p) => format!("{prefix}{p}"),
                    };
                    out.push(joined);
                }
            }
            Some(open) => {
                let head = &t[..open];
                // The matching brace, and the top-level commas inside it.
                let mut depth = 0;
                let mut close = t.len();
                for (i, c) in t.char_indices().skip(open) {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                close = i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let (before, head_item) = match head.rfind(',') {
                    Some(c) => (&head[..c], &head[c + 1..]),
                    None => ("", head),
                };
                if !before.is_empty() {
                    go(prefix, before, out);
                }
                let inner = &t[open + 1..close];
                let mut depth = 0;
                let mut start = 0;
                let new_prefix = format!("{prefix}{head_item}");
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            go(&new_prefix, &inner[start..i], out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                go(&new_prefix, &inner[start..], out);
                let rest = t[close + 1..].trim_start_matches(',');
                if !rest.is_empty() {
                    go(prefix, rest, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    out
}

/// Every path a module names that starts at `crate`, `super` or `self`.
fn referenced_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    // `use` declarations, braces expanded.
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        let after = &rest[at + 4..];
        if before.is_none_or(|c| !c.is_alphanumeric() && c != '_')
            && let Some(end) = after.find(';')
        {
            paths.extend(expand_use(&after[..end]));
        }
        rest = after;
    }
    // Inline paths.
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let at = from + at;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            paths.push(code[at..end].trim_end_matches(':').to_string());
        }
    }
    paths
}

/// The module a path lands in: the deepest existing module along it.
fn resolve(from: &ModPath, path: &str, modules: &BTreeMap<ModPath, String>) -> Option<ModPath> {
    let mut segs = path.split("::").filter(|s| !s.is_empty());
    let mut base: ModPath = match segs.next()? {
        "crate" => Vec::new(),
        "self" => from.clone(),
        "super" => {
            let mut p = from.clone();
            p.pop();
            p
        }
        _ => return None,
    };
    for s in segs {
        if s == "super" {
            base.pop();
            continue;
        }
        let mut next = base.clone();
        next.push(s.to_string());
        if modules.contains_key(&next) {
            base = next;
        } else {
            break;
        }
    }
    Some(base)
}

fn graph(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let modules = module_files(src);
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (m, text) in &modules {
        let targets = edges.entry(m.clone()).or_default();
        for p in referenced_paths(&code_of(text)) {
            if let Some(t) = resolve(m, &p, &modules)
                && &t != m
            {
                targets.insert(t);
            }
        }
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on: BTreeSet<&'a ModPath>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a ModPath) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(if w.is_empty() {
                    "(root)".to_string()
                } else {
                    w.join("::")
                });
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.found.push(comp);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn the_core_has_no_module_cycle() {
    let src = manifest_dir().join("crates/terrarium-core/src");
    let found = cycles(&graph(&src));
    assert!(
        found.is_empty(),
        "module cycles in terrarium-core: {found:?}"
    );
}

#[test]
fn the_binary_has_no_module_cycle() {
    let found = cycles(&graph(&manifest_dir().join("src")));
    assert!(
        found.is_empty(),
        "module cycles in the terrarium binary: {found:?}"
    );
}

#[test]
fn the_core_knows_no_front_door() {
    const FRONT_DOOR_CRATES: [&str; 8] = [
        "rmcp", "axum", "hyper", "octocrab", "clap", "anyhow", "tower", "reqwest",
    ];
    let manifest = std::fs::read_to_string(manifest_dir().join("crates/terrarium-core/Cargo.toml"))
        .expect("core manifest");
    let deps: toml::Table = toml::from_str(&manifest).expect("manifest parses");
    for section in ["dependencies", "dev-dependencies"] {
        for name in deps
            .get(section)
            .and_then(|d| d.as_table())
            .into_iter()
            .flat_map(|t| t.keys())
        {
            assert!(
                !FRONT_DOOR_CRATES
                    .iter()
                    .any(|f| name == f || name.starts_with(&format!("{f}-"))),
                "terrarium-core depends on the front-door crate {name}"
            );
        }
    }
    // And no source file names one (or a front-door module of the binary).
    for (m, text) in module_files(&manifest_dir().join("crates/terrarium-core/src")) {
        let code = code_of(&text);
        for name in FRONT_DOOR_CRATES.iter().chain(&[
            "terrarium::",
            "github::",
            "http::",
            "mcp::",
            "settings::",
        ]) {
            let needle = if name.ends_with("::") {
                name.to_string()
            } else {
                format!("{name}::")
            };
            let hit = code.match_indices(&needle).any(|(i, _)| {
                i == 0 || {
                    let c = code.as_bytes()[i - 1];
                    !(c.is_ascii_alphanumeric() || c == b'_' || c == b':')
                }
            });
            assert!(!hit, "core module {} names {name}", m.join("::"));
        }
    }
}

#[test]
fn the_checker_sees_a_cycle_when_there_is_one() {
    // The check itself must be able to fail: two modules naming each other, through a use tree.
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").expect("lib");
    std::fs::write(
        src.join("a.rs"),
        "use crate::{b::{self, inner::Thing}};\n// crate::c in a comment is no edge\n",
    )
    .expect("a");
    std::fs::create_dir_all(src.join("b")).expect("b dir");
    std::fs::write(src.join("b/mod.rs"), "pub mod inner;\n").expect("b");
    std::fs::write(
        src.join("b/inner.rs"),
        "pub struct Thing;\nfn f() { super::super::a::g(); }\n",
    )
    .expect("inner");
    let found = cycles(&graph(src));
    assert_eq!(found, vec![vec!["a".to_string(), "b::inner".into()]]);
    // Without the back edge, no cycle.
    std::fs::write(src.join("b/inner.rs"), "pub struct Thing;\n").expect("inner");
    assert!(cycles(&graph(src)).is_empty());
}

/// The top-level entry of the repository that a path (relative to `base`, inside the
/// repository) lives in.
fn top_level(base: &Path, rel: &str) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    let start = base.strip_prefix(manifest_dir()).ok()?;
    for c in start.join(rel).components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop()?;
            }
            std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.into_iter().next()
}

/// The image is built from a copy of what the Dockerfile names: every workspace member, every
/// target the manifest declares (cargo reads them all), and every file a crate embeds must be
/// copied into the build stage, or `docker build` fails where no test runs it.
#[test]
fn the_dockerfile_copies_every_source_the_build_reads() {
    let root = manifest_dir();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let build_stage = dockerfile
        .split("\nFROM ")
        .find(|stage| stage.contains("cargo build"))
        .expect("a build stage");
    let copied: BTreeSet<String> = build_stage
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();

    let mut needed = BTreeSet::from(["Cargo.toml".to_string(), "Cargo.lock".to_string()]);
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    needed.extend(members.iter().filter_map(|m| top_level(&root, m.as_str()?)));
    needed.insert("src".into());
    for kind in ["bin", "test", "bench", "example"] {
        for target in manifest
            .get(kind)
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
        {
            match target.get("path").and_then(|p| p.as_str()) {
                Some(p) => needed.extend(top_level(&root, p)),
                // Without a path, cargo looks in the conventional directory.
                None if kind == "bench" => {
                    needed.insert("benches".into());
                }
                None => {}
            }
        }
    }
    for src in [root.join("src"), root.join("crates/terrarium-core/src")] {
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for chunk in text.split("include_").skip(1) {
                        if let Some(arg) = chunk
                            .strip_prefix("str!(\"")
                            .or_else(|| chunk.strip_prefix("bytes!(\""))
                            && let Some(end) = arg.find('"')
                        {
                            needed.extend(top_level(p.parent().unwrap(), &arg[..end]));
                        }
                    }
                }
            }
        }
    }
    assert!(
        needed.contains("schemas"),
        "embedded files were found: {needed:?}"
    );
    let missing: Vec<&String> = needed.iter().filter(|n| !copied.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the Dockerfile's build stage does not COPY {missing:?} (it copies {copied:?})"
    );
}
