//! `terrarium ci plan` as a plain CI step, with the real Terraform: the exit codes of
//! `terraform plan -detailed-exitcode` (0, 2, 1), discovery of root modules and of changed
//! directories, and the Markdown summary in GITHUB_STEP_SUMMARY.

mod common;

use std::process::Command;

use common::*;

fn ci_plan(sb: &Sandbox, args: &[&str]) -> (i32, String, String) {
    let summary = sb.dir.path().join("summary.md");
    let _ = std::fs::remove_file(&summary);
    let out = Command::new(env!("CARGO_BIN_EXE_terrarium"))
        .args(["ci", "plan"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERRARIUM_STATE_DIR", &sb.state)
        .env("TERRARIUM_AUDIT_DIR", &sb.audit)
        .env("TERRARIUM_TERRAFORM_BIN", terraform())
        .env("GITHUB_WORKSPACE", &sb.root)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        std::fs::read_to_string(&summary).unwrap_or_default(),
    )
}

#[test]
fn exit_codes_follow_detailed_exitcode() {
    let sb = Sandbox::new(&["noop"]);
    let (code, out, summary) = ci_plan(&sb, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("| `noop` | ✅ no changes |"), "{out}");
    assert_eq!(out, summary, "the same summary goes to GITHUB_STEP_SUMMARY");

    let sb = Sandbox::new(&["noop", "basic"]);
    let (code, out, _) = ci_plan(&sb, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("| `basic` | 📝 changes | 1 | 0 | 0 |"),
        "{out}"
    );
    assert!(out.contains("- `create terraform_data.greeting`"), "{out}");
    assert!(out.contains("<details><summary>Output</summary>"), "{out}");

    let sb = Sandbox::new(&["basic", "invalid"]);
    let (code, out, _) = ci_plan(&sb, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("| `invalid` | ❌ error |"), "{out}");
    assert_eq!(
        out.matches("```").count() % 2,
        0,
        "code blocks stay balanced"
    );
}

#[test]
fn discovers_root_modules_and_changed_directories() {
    let sb = Sandbox::new(&["basic", "module_user", "noop"]);
    let (code, out, _) = ci_plan(&sb, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("`module_user`") && out.contains("`basic`"),
        "{out}"
    );
    assert!(
        !out.contains("`module_user/modules/greeter`"),
        "modules are not planned on their own: {out}"
    );

    let (code, out, _) = ci_plan(&sb, &["--dir", "noop"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("`basic`"));

    // --base: only the directories a change touched.
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&sb.root)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "base"]);
    std::fs::write(sb.root.join("noop/extra.tf"), "locals {\n  more = 1\n}\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-qm", "change"]);
    let (code, out, _) = ci_plan(&sb, &["--base", "HEAD~1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("`noop`") && !out.contains("`basic`"), "{out}");

    let (code, _, _) = ci_plan(&sb, &["--dir", "../outside"]);
    assert_eq!(code, 1, "confinement applies to CI too");
}
