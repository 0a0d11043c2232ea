//! `terrarium ci plan` as a plain CI step, with the real Terraform: the exit codes of
//! `terraform plan -detailed-exitcode` (0, 2, 1), discovery of root modules and of changed
//! directories, and the Markdown summary in GITHUB_STEP_SUMMARY.

use std::process::Command;

use crate::common::*;

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

/// A listener standing in for an attacker's server: counts every connection it receives.
fn attacker() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Hold it open a moment so that the client sends its request.
            if let Ok(mut s) = stream {
                use std::io::Read;
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
            }
        }
    });
    (port, hits)
}

/// A pull request's checkout is the current directory of `ci plan`; its `.env` and
/// `terrarium.toml` would turn the sandbox off, pass the App key to terraform and point the
/// GitHub API at the attacker (who would receive a signed App JWT). They are refused, naming
/// the file, and nothing reaches the attacker — with or without GITHUB_WORKSPACE.
#[test]
fn a_hostile_checkout_cannot_configure_ci_plan() {
    let (port, hits) = attacker();
    let key = crate::common::github::app_private_key();
    for with_github_workspace in [true, false] {
        let sb = Sandbox::new(&["basic"]);
        std::fs::write(
            sb.root.join(".env"),
            format!(
                "TERRARIUM_SANDBOX=off\nTERRARIUM_GITHUB_API_URL=http://127.0.0.1:{port}\n\
                 TERRARIUM_PASSTHROUGH_PREFIXES=TERRARIUM_GITHUB_\n"
            ),
        )
        .unwrap();
        std::fs::write(
            sb.root.join("terrarium.toml"),
            "sandbox = \"off\"\npassthrough_prefixes = [\"TERRARIUM_GITHUB_\"]\n",
        )
        .unwrap();
        let summary = sb.dir.path().join("summary.md");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_terrarium"));
        cmd.args(["ci", "plan", "--repo", "acme/infra", "--pr", "1"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TERRARIUM_STATE_DIR", &sb.state)
            .env("TERRARIUM_AUDIT_DIR", &sb.audit)
            .env("TERRARIUM_TERRAFORM_BIN", terraform())
            .env(
                "TERRARIUM_GITHUB_APP_ID",
                crate::common::github::APP_ID.to_string(),
            )
            .env("TERRARIUM_GITHUB_PRIVATE_KEY", &key)
            .env("TERRARIUM_GITHUB_REPOS", "acme/*")
            .env("GITHUB_STEP_SUMMARY", &summary)
            .current_dir(&sb.root);
        if with_github_workspace {
            cmd.env("GITHUB_WORKSPACE", &sb.root);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the attacker's server was contacted: {err}"
        );
        assert_eq!(out.status.code(), Some(1), "refused: {err}");
        assert!(
            err.contains(&sb.root.join(".env").display().to_string()) && err.contains("--env-file"),
            "the error names the file and the safe alternative: {err}"
        );
        assert!(!summary.exists(), "nothing was planned");

        // The TOML file alone is refused the same way.
        std::fs::remove_file(sb.root.join(".env")).unwrap();
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "refused: {err}");
        assert!(err.contains("terrarium.toml"), "{err}");
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// The operator's own settings come from an explicit file outside the checkout; a hostile
/// `.env` in the checkout is then not even looked at. An explicit file inside the checkout is
/// refused like an implicit one.
#[test]
fn explicit_configuration_outside_the_checkout_is_the_safe_way() {
    let sb = Sandbox::new(&["noop"]);
    std::fs::write(sb.root.join(".env"), "TERRARIUM_SANDBOX=off\n").unwrap();
    let outside = sb.dir.path().join("terrarium.toml");
    std::fs::write(&outside, "timeout_secs = 77\n").unwrap();
    let run = |config: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_terrarium"))
            .args(["ci", "plan", "--config"])
            .arg(config)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TERRARIUM_STATE_DIR", &sb.state)
            .env("TERRARIUM_AUDIT_DIR", &sb.audit)
            .env("TERRARIUM_TERRAFORM_BIN", terraform())
            .env("GITHUB_WORKSPACE", &sb.root)
            .current_dir(&sb.root)
            .output()
            .unwrap()
    };
    let out = run(&outside);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("Sandbox not strict"),
        "the checkout's .env was not read: {stdout}"
    );
    let inside = sb.root.join("terrarium.toml");
    std::fs::write(&inside, "sandbox = \"off\"\n").unwrap();
    let out = run(&inside);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing to start") && err.contains("terrarium.toml"),
        "{err}"
    );
}

/// A sandbox that is not strict is stated at the top of the summary.
#[test]
fn a_sandbox_that_is_not_strict_is_stated_in_the_summary() {
    let sb = Sandbox::new(&["noop"]);
    let summary = sb.dir.path().join("summary.md");
    for (name, value, expect) in [
        ("TERRARIUM_SANDBOX", "off", "TERRARIUM_SANDBOX=off"),
        (
            "TERRARIUM_SANDBOX_DISABLE",
            "seccomp",
            "seccomp is disabled",
        ),
    ] {
        let _ = std::fs::remove_file(&summary);
        let out = Command::new(env!("CARGO_BIN_EXE_terrarium"))
            .args(["ci", "plan"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TERRARIUM_STATE_DIR", &sb.state)
            .env("TERRARIUM_AUDIT_DIR", &sb.audit)
            .env("TERRARIUM_TERRAFORM_BIN", terraform())
            .env("GITHUB_WORKSPACE", &sb.root)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env(name, value)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        let md = std::fs::read_to_string(&summary).unwrap();
        assert!(
            md.contains("Sandbox not strict") && md.contains(expect),
            "{name}={value}: {md}"
        );
        assert!(
            md.find("Sandbox not strict") < md.find("| Directory"),
            "stated before the results: {md}"
        );
    }
}
