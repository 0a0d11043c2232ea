//! Safe extraction of repository archives: hostile tarballs are refused and leave nothing
//! behind; a good one is extracted with GitHub's top-level directory stripped.

mod common;

use std::path::Path;

use common::tarball::{Kind, tarball};

use terrarium::github::archive::{ArchiveError, Limits, extract_tar_gz};

fn extract(
    bytes: &[u8],
    limits: Limits,
) -> (
    tempfile::TempDir,
    Result<terrarium::github::archive::Extracted, ArchiveError>,
) {
    let d = tempfile::tempdir().unwrap();
    let r = extract_tar_gz(bytes, &d.path().join("ws"), limits);
    (d, r)
}

fn left_nothing(d: &Path) {
    assert!(
        !d.join("ws").exists(),
        "a failed extraction left files behind"
    );
}

#[test]
fn a_good_archive_is_extracted_with_the_top_directory_stripped() {
    let bytes = tarball(&[
        ("acme-infra-abc123/", Kind::Dir),
        (
            "acme-infra-abc123/main.tf",
            Kind::File(b"resource \"terraform_data\" \"x\" {}\n"),
        ),
        ("acme-infra-abc123/modules/", Kind::Dir),
        ("acme-infra-abc123/modules/m.tf", Kind::File(b"# module\n")),
        ("acme-infra-abc123/current", Kind::Symlink("modules")),
        (
            "acme-infra-abc123/copy.tf",
            Kind::Hardlink("acme-infra-abc123/main.tf"),
        ),
    ]);
    let (d, r) = extract(&bytes, Limits::default());
    let stats = r.unwrap();
    assert_eq!(stats.files, 3);
    let ws = d.path().join("ws");
    assert!(ws.join("main.tf").is_file());
    assert!(ws.join("modules/m.tf").is_file());
    assert_eq!(
        std::fs::read_link(ws.join("current")).unwrap(),
        Path::new("modules")
    );
    assert_eq!(
        std::fs::read(ws.join("copy.tf")).unwrap(),
        std::fs::read(ws.join("main.tf")).unwrap()
    );
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing_behind() {
    let outside = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "traversal",
            tarball(&[("top/../../evil.tf", Kind::File(b"x"))]),
        ),
        (
            "absolute",
            tarball(&[("/tmp/terrarium-evil.tf", Kind::File(b"x"))]),
        ),
        (
            "symlink out (absolute)",
            tarball(&[("top/etc", Kind::Symlink("/etc"))]),
        ),
        (
            "symlink out (relative)",
            tarball(&[("top/a/up", Kind::Symlink("../../.."))]),
        ),
        (
            "write through a symlink",
            tarball(&[
                ("top/link", Kind::Symlink("/tmp")),
                ("top/link/evil.tf", Kind::File(b"x")),
            ]),
        ),
        (
            "hard link out",
            tarball(&[("top/passwd", Kind::Hardlink("/etc/passwd"))]),
        ),
        (
            "hard link traversal",
            tarball(&[("top/x", Kind::Hardlink("top/../../etc/passwd"))]),
        ),
        ("device file", tarball(&[("top/dev", Kind::CharDevice)])),
    ];
    for (name, bytes) in cases {
        let (d, r) = extract(&bytes, Limits::default());
        assert!(r.is_err(), "{name} was accepted");
        left_nothing(d.path());
    }
    assert!(!Path::new("/tmp/terrarium-evil.tf").exists());
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
}

#[test]
fn size_count_and_bomb_limits() {
    let big = vec![b'x'; 4096];
    let big: &'static [u8] = Box::leak(big.into_boxed_slice());
    let small = Limits {
        max_total_bytes: 1000,
        max_entries: 3,
        max_stream_bytes: 1 << 20,
    };
    let (d, r) = extract(&tarball(&[("top/big.tf", Kind::File(big))]), small);
    assert!(matches!(r, Err(ArchiveError::TooLarge(_))), "{r:?}");
    left_nothing(d.path());

    let many: Vec<(String, Kind)> = (0..5)
        .map(|i| (format!("top/f{i}.tf"), Kind::File(b"x")))
        .collect();
    let many_refs: Vec<(&str, Kind)> = many
        .into_iter()
        .map(|(n, k)| (&*Box::leak(n.into_boxed_str()), k))
        .collect();
    let (d, r) = extract(&tarball(&many_refs), small);
    assert!(matches!(r, Err(ArchiveError::TooManyEntries(3))), "{r:?}");
    left_nothing(d.path());

    // A gzip bomb: 64 MiB of zeros compress to a few KiB; the stream cap stops it.
    let zeros: &'static [u8] = Box::leak(vec![0u8; 64 << 20].into_boxed_slice());
    let bomb = tarball(&[("top/zeros.bin", Kind::File(zeros))]);
    assert!(bomb.len() < 1 << 20, "the bomb is small: {}", bomb.len());
    let limits = Limits {
        max_total_bytes: 1 << 40,
        max_entries: 10,
        max_stream_bytes: 8 << 20,
    };
    let (d, r) = extract(&bomb, limits);
    assert!(matches!(r, Err(ArchiveError::TooLarge(_))), "{r:?}");
    left_nothing(d.path());
}

#[test]
fn the_destination_must_be_fresh() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("ws")).unwrap();
    let r = extract_tar_gz(
        &tarball(&[("top/a.tf", Kind::File(b"x"))])[..],
        &d.path().join("ws"),
        Limits::default(),
    );
    assert!(matches!(r, Err(ArchiveError::Exists(_))));
}
