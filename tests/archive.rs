//! Safe extraction of repository archives: hostile tarballs are refused and leave nothing
//! behind; a good one is extracted with GitHub's top-level directory stripped.

use std::path::Path;

use crate::common::tarball::{Kind, tarball};

use terrarium_core::archive::{ArchiveError, Limits, extract_tar_gz};

fn extract(
    bytes: &[u8],
    limits: Limits,
) -> (
    tempfile::TempDir,
    Result<terrarium_core::archive::Extracted, ArchiveError>,
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

/// Everything under `dir` except `skip`: path → what it is (content, link target, kind).
fn snapshot(dir: &Path, skip: &str) -> std::collections::BTreeMap<String, String> {
    fn walk(
        base: &Path,
        dir: &Path,
        skip: &str,
        out: &mut std::collections::BTreeMap<String, String>,
    ) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if rel == skip {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(base, &p, skip, out);
                "dir".to_string()
            } else {
                format!("file {:?}", std::fs::read(&p).unwrap())
            };
            out.insert(rel, what);
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, skip, &mut out);
    out
}

/// A fresh directory `ws` to extract into, beside a sentinel directory with a file and a
/// subdirectory an attack would like to write to.
fn arena() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("sentinel/sub")).unwrap();
    std::fs::write(d.path().join("sentinel/target"), b"original").unwrap();
    d
}

/// Extracts `bytes` beside the sentinel; asserts it was refused with an error containing
/// `expect`, that nothing is left at `ws`, and that nothing beside it was created or changed.
fn assert_refused_harmlessly(name: &str, bytes: &[u8], expect: &str) {
    let d = arena();
    let before = snapshot(d.path(), "ws");
    let r = extract_tar_gz(bytes, &d.path().join("ws"), Limits::default());
    let after = snapshot(d.path(), "ws");
    assert_eq!(
        before, after,
        "{name}: something outside the fresh directory changed"
    );
    assert_eq!(
        std::fs::read(d.path().join("sentinel/target")).unwrap(),
        b"original",
        "{name}"
    );
    match r {
        Ok(_) => panic!("{name} was accepted"),
        Err(e) => assert!(
            e.to_string().contains(expect),
            "{name}: the error {e:?} does not say {expect:?}"
        ),
    }
    assert!(
        std::fs::symlink_metadata(d.path().join("ws")).is_err(),
        "{name}: a refused extraction left the fresh directory behind"
    );
}

#[test]
fn a_parent_symlink_chain_cannot_carry_a_link_or_a_write_outside() {
    // `a -> .` makes `a/a/a` the top itself: the lexical depth of `a/a/a/x` (3) is a lie, and
    // `../sentinel/...` from where the link really lands is outside.
    assert_refused_harmlessly(
        "parent symlink chain",
        &tarball(&[
            ("top/", Kind::Dir),
            ("top/a", Kind::Symlink(".")),
            ("top/a/a/a/x", Kind::Symlink("../sentinel")),
            ("top/x/owned.tf", Kind::File(b"owned")),
        ]),
        "symbolic link",
    );
    // The reviewer's write: the planted link, then a hard link copied through it.
    assert_refused_harmlessly(
        "hard link copied through a planted link",
        &tarball(&[
            ("top/", Kind::Dir),
            ("top/a", Kind::Symlink(".")),
            ("top/payload", Kind::File(b"owned")),
            ("top/a/a/y", Kind::Symlink("../sentinel/target")),
            ("top/y", Kind::Hardlink("top/payload")),
        ]),
        "symbolic link",
    );
    // The same to a file that does not exist yet: it must not be created.
    assert_refused_harmlessly(
        "hard link creating a file through a planted link",
        &tarball(&[
            ("top/", Kind::Dir),
            ("top/a", Kind::Symlink(".")),
            ("top/payload", Kind::File(b"owned")),
            ("top/a/a/y", Kind::Symlink("../sentinel/new.tf")),
            ("top/y", Kind::Hardlink("top/payload")),
        ]),
        "symbolic link",
    );
    // Directories must not be created through a planted link either.
    assert_refused_harmlessly(
        "directories created through a planted link",
        &tarball(&[
            ("top/", Kind::Dir),
            ("top/a", Kind::Symlink(".")),
            ("top/a/a/x", Kind::Symlink("../sentinel")),
            ("top/x/newdir/f.tf", Kind::File(b"x")),
        ]),
        "symbolic link",
    );
}

#[test]
fn a_link_that_leaves_through_another_link_is_refused() {
    // `d1/d2/up -> ../..` is the top; `x -> d1/d2/up/../sentinel/target` looks four levels
    // deep but really points beside the tree.
    assert_refused_harmlessly(
        "link through an inner link",
        &tarball(&[
            ("top/d1/d2/", Kind::Dir),
            ("top/d1/d2/up", Kind::Symlink("../..")),
            ("top/x", Kind::Symlink("d1/d2/up/../sentinel/target")),
        ]),
        "points outside",
    );
    // The same with the inner link planted after the outer one: order does not matter.
    assert_refused_harmlessly(
        "link made outside by a later entry",
        &tarball(&[
            ("top/x", Kind::Symlink("d1/d2/up/../sentinel/target")),
            ("top/d1/d2/", Kind::Dir),
            ("top/d1/d2/up", Kind::Symlink("../..")),
        ]),
        "points outside",
    );
    // And a hard link that would have copied through it.
    assert_refused_harmlessly(
        "hard link onto an escaping link",
        &tarball(&[
            ("top/d1/d2/", Kind::Dir),
            ("top/d1/d2/up", Kind::Symlink("../..")),
            ("top/x", Kind::Symlink("d1/d2/up/../sentinel/target")),
            ("top/p", Kind::File(b"owned")),
            ("top/x", Kind::Hardlink("top/p")),
        ]),
        "already taken",
    );
}

#[test]
fn writes_through_links_files_and_duplicates_are_refused() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "symlink then a file written through it",
            tarball(&[
                ("top/sub/", Kind::Dir),
                ("top/l", Kind::Symlink("sub")),
                ("top/l/f.tf", Kind::File(b"x")),
            ]),
            "symbolic link",
        ),
        (
            "symlink to a dir then a directory entry under it",
            tarball(&[
                ("top/d/", Kind::Dir),
                ("top/l", Kind::Symlink("d")),
                ("top/l/e/", Kind::Dir),
            ]),
            "symbolic link",
        ),
        (
            "symlink out then a file under it",
            tarball(&[
                ("top/l", Kind::Symlink("../../sentinel")),
                ("top/l/f.tf", Kind::File(b"x")),
            ]),
            "points outside",
        ),
        (
            "hard link to a symlink",
            tarball(&[
                ("top/f", Kind::File(b"x")),
                ("top/l", Kind::Symlink("f")),
                ("top/h", Kind::Hardlink("top/l")),
            ]),
            "regular file",
        ),
        (
            "hard link to a path through a planted symlink",
            tarball(&[
                ("top/d/f", Kind::File(b"x")),
                ("top/l", Kind::Symlink("d")),
                ("top/h", Kind::Hardlink("top/l/f")),
            ]),
            "regular file",
        ),
        (
            "hard link to a directory",
            tarball(&[("top/d/", Kind::Dir), ("top/h", Kind::Hardlink("top/d"))]),
            "regular file",
        ),
        (
            "hard link to a file not extracted",
            tarball(&[("top/h", Kind::Hardlink("top/nothing"))]),
            "regular file",
        ),
        (
            "hard link to an absolute path",
            tarball(&[("top/h", Kind::Hardlink("/etc/passwd"))]),
            "absolute",
        ),
        (
            "hard link out with ..",
            tarball(&[("top/h", Kind::Hardlink("top/../../sentinel/target"))]),
            "leaves",
        ),
        (
            "an entry whose parent is a file",
            tarball(&[("top/f", Kind::File(b"x")), ("top/f/g", Kind::File(b"y"))]),
            "a file",
        ),
        (
            "a file over a symlink",
            tarball(&[("top/l", Kind::Symlink("f")), ("top/l", Kind::File(b"x"))]),
            "already taken",
        ),
        (
            "a directory over a symlink",
            tarball(&[("top/l", Kind::Symlink("f")), ("top/l/", Kind::Dir)]),
            "already taken",
        ),
        (
            "a symlink over a file",
            tarball(&[("top/f", Kind::File(b"x")), ("top/f", Kind::Symlink("g"))]),
            "already taken",
        ),
        (
            "a file twice",
            tarball(&[("top/f", Kind::File(b"x")), ("top/f", Kind::File(b"y"))]),
            "already taken",
        ),
        (
            "absolute symlink",
            tarball(&[("top/etc", Kind::Symlink("/etc"))]),
            "points outside",
        ),
        (
            "symlink out with ..",
            tarball(&[("top/a/up", Kind::Symlink("../../sentinel"))]),
            "points outside",
        ),
        (
            "empty symlink",
            tarball(&[("top/e", Kind::Symlink(""))]),
            "points outside",
        ),
        (
            "traversal in an entry",
            tarball(&[("top/../sentinel/x.tf", Kind::File(b"x"))]),
            "leaves",
        ),
        (
            "absolute entry",
            tarball(&[("/tmp/terrarium-evil.tf", Kind::File(b"x"))]),
            "absolute",
        ),
        (
            "char device",
            tarball(&[("top/dev", Kind::CharDevice)]),
            "special files",
        ),
        (
            "block device",
            tarball(&[("top/blk", Kind::BlockDevice)]),
            "special files",
        ),
        (
            "fifo",
            tarball(&[("top/fifo", Kind::Fifo)]),
            "special files",
        ),
    ];
    for (name, bytes, expect) in cases {
        assert_refused_harmlessly(name, &bytes, expect);
    }
    assert!(!Path::new("/tmp/terrarium-evil.tf").exists());
}

#[test]
fn links_inside_the_tree_stay_allowed() {
    let bytes = tarball(&[
        ("top/modules/m.tf", Kind::File(b"# m\n")),
        ("top/modules/up", Kind::Symlink("../main.tf")),
        ("top/main.tf", Kind::File(b"# main\n")),
        ("top/envs/prod/", Kind::Dir),
        ("top/envs/prod/modules", Kind::Symlink("../../modules")),
        ("top/envs/prod/via", Kind::Symlink("modules/up")),
        ("top/dangling", Kind::Symlink("not/yet/there")),
        ("top/self", Kind::Symlink(".")),
        ("top/h", Kind::Hardlink("top/modules/m.tf")),
    ]);
    let d = arena();
    let stats = extract_tar_gz(&bytes[..], &d.path().join("ws"), Limits::default()).unwrap();
    assert_eq!(stats.files, 3);
    let ws = d.path().join("ws");
    assert_eq!(
        std::fs::read(ws.join("envs/prod/via")).unwrap(),
        b"# main\n"
    );
    use std::os::unix::fs::MetadataExt;
    // A real hard link, to the file extracted earlier; nothing shared with anything outside.
    assert_eq!(
        std::fs::metadata(ws.join("h")).unwrap().ino(),
        std::fs::metadata(ws.join("modules/m.tf")).unwrap().ino()
    );
    assert_eq!(std::fs::metadata(ws.join("h")).unwrap().nlink(), 2);
}

#[test]
fn the_destination_is_reached_without_following_links() {
    use terrarium_core::archive::extract_beneath;
    let d = arena();
    let root = d.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    // A workspace planted `github -> ../sentinel` in the root.
    std::os::unix::fs::symlink("../sentinel", root.join("github")).unwrap();
    let before = snapshot(d.path(), "");
    let r = extract_beneath(
        &tarball(&[("top/a.tf", Kind::File(b"x"))])[..],
        &root,
        Path::new("github/acme/infra/main-1"),
        Limits::default(),
        None,
    );
    assert!(
        matches!(r, Err(ArchiveError::UnsafeDestination(_))),
        "{r:?}"
    );
    assert_eq!(before, snapshot(d.path(), ""));

    // The marker replaces whatever the archive put under its name (a link here).
    std::fs::remove_file(root.join("github")).unwrap();
    extract_beneath(
        &tarball(&[
            ("top/a.tf", Kind::File(b"x")),
            ("top/.marker", Kind::Symlink("a.tf")),
        ])[..],
        &root,
        Path::new("github/acme/infra/main-1"),
        Limits::default(),
        Some((".marker", b"acme/infra@main\n")),
    )
    .unwrap();
    let marker = root.join("github/acme/infra/main-1/.marker");
    assert!(std::fs::symlink_metadata(&marker).unwrap().is_file());
    assert_eq!(std::fs::read(&marker).unwrap(), b"acme/infra@main\n");
    assert_eq!(
        std::fs::read(root.join("github/acme/infra/main-1/a.tf")).unwrap(),
        b"x"
    );
}
