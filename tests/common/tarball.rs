//! Hand-made gzip tarballs: hostile ones (raw entry names, links, devices) and real ones of a
//! fixture directory in GitHub's layout (`owner-repo-sha/...`).

use std::io::Write;
use std::path::Path;

pub enum Kind {
    File(&'static [u8]),
    Dir,
    Symlink(&'static str),
    Hardlink(&'static str),
    CharDevice,
    BlockDevice,
    Fifo,
}

/// A gzip tarball with raw entry names (the tar crate's path checks are bypassed on purpose).
pub fn tarball(entries: &[(&str, Kind)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind) in entries {
        let mut h = tar::Header::new_old();
        let raw = h.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        h.set_mtime(0);
        let data: &[u8] = match kind {
            Kind::File(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                d
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                b""
            }
            Kind::Symlink(t) | Kind::Hardlink(t) => {
                h.set_entry_type(if matches!(kind, Kind::Symlink(_)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
                b""
            }
            Kind::CharDevice => {
                h.set_entry_type(tar::EntryType::Char);
                b""
            }
            Kind::BlockDevice => {
                h.set_entry_type(tar::EntryType::Block);
                b""
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                b""
            }
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// A tarball of `dir` as GitHub serves it: every path under `top/`.
pub fn of_dir(dir: &Path, top: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    b.append_dir_all(top, dir).unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}
