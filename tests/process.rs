//! What a run is allowed to be: bounded in time, output and resources, with a scrubbed
//! environment, and leaving no process behind.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn timeout_kills_a_stubborn_process_group() {
    let sb = Sandbox::new(&["basic"]);
    let env = sb.env(
        &standin("stubborn.sh"),
        &[
            ("TERRARIUM_TIMEOUT_SECS", "2"),
            ("TERRARIUM_KILL_GRACE_SECS", "1"),
        ],
    );
    let session = connect(&env).await;
    let started = Instant::now();
    let r = call(&session, "terraform_validate", json!({"path": "basic"})).await;
    let elapsed = started.elapsed();
    assert!(is_error(&r));
    let s = sc(&r);
    assert_eq!(s["timed_out"], true, "{s}");
    assert!(
        s["stdout"].as_str().unwrap().contains("started"),
        "output before the timeout is kept"
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    read_pid(&sb.root.join("basic/parent.pid"));
    read_pid(&sb.root.join("basic/child.pid"));
    assert!(
        none_left_in(&sb.root.join("basic"), 5),
        "the SIGINT-ignoring parent survived"
    );
    assert!(
        none_left_in(&sb.root.join("basic"), 5),
        "its SIGINT-ignoring child survived"
    );
    session.cancel().await.unwrap();
    let events = sb.audit_events();
    assert_eq!(events[0]["timed_out"], true);
}

/// Without a PID namespace (here: the namespaces layer disabled, the cgroup kept), what a run
/// left behind is killed and also reaped: no zombie stays a child of the server, where it
/// would count against the user's process limit forever.
#[tokio::test]
async fn what_a_run_leaves_behind_is_killed_and_reaped_without_a_pid_namespace() {
    let sb = Sandbox::new(&["basic"]);
    for disable in ["namespaces", "namespaces,cgroup"] {
        let env = sb.env(
            &standin("orphan.sh"),
            &[
                ("TERRARIUM_SANDBOX", "best-effort"),
                ("TERRARIUM_SANDBOX_DISABLE", disable),
            ],
        );
        let (session, server) = connect_as(&env, None).await;
        let _ = std::fs::remove_file(sb.root.join("basic/orphan.pid"));
        let r = call(&session, "terraform_validate", json!({"path": "basic"})).await;
        assert!(
            text(&r).contains("left one behind"),
            "{disable}: {}",
            text(&r)
        );
        let orphan = read_pid(&sb.root.join("basic/orphan.pid"));
        assert!(
            !std::path::Path::new(&format!("/proc/{orphan}")).exists(),
            "{disable}: the orphan {orphan} is still there (alive or a zombie)"
        );
        let children: String = std::fs::read_dir(format!("/proc/{server}/task"))
            .unwrap()
            .flatten()
            .map(|t| std::fs::read_to_string(t.path().join("children")).unwrap_or_default())
            .collect();
        assert_eq!(
            children.trim(),
            "",
            "{disable}: the server still has children"
        );
        session.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn interrupted_real_apply_leaves_no_provisioner_orphan() {
    let sb = Sandbox::new(&["slow_fork"]);
    let env = sb.env(
        &terraform(),
        &[
            ("TERRARIUM_ENABLE_APPLY", "true"),
            ("TERRARIUM_TIMEOUT_SECS", "4"),
            ("TERRARIUM_KILL_GRACE_SECS", "3"),
        ],
    );
    let session = connect(&env).await;
    call_ok(&session, "terraform_init", json!({"path": "slow_fork"})).await;
    let plan = call_ok(&session, "terraform_plan", json!({"path": "slow_fork"})).await;
    let r = call(
        &session,
        "terraform_apply",
        json!({"path": "slow_fork", "plan_id": plan["plan_id"]}),
    )
    .await;
    assert!(is_error(&r));
    assert_eq!(sc(&r)["timed_out"], true, "{}", text(&r));
    read_pid(&sb.root.join("slow_fork/sleeper.pid"));
    assert!(
        none_left_in(&sb.root.join("slow_fork"), 5),
        "the provisioner's background sleeper outlived the run"
    );
    // The server still serves.
    call_ok(&session, "terraform_validate", json!({"path": "slow_fork"})).await;
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn output_floods_are_capped() {
    let sb = Sandbox::new(&["basic"]);
    let env = sb.env(
        &standin("flood.sh"),
        &[("TERRARIUM_OUTPUT_LIMIT_BYTES", "65536")],
    );
    let session = connect(&env).await;
    let r = call(&session, "terraform_init", json!({"path": "basic"})).await;
    let s = ok(&r);
    assert_eq!(s["truncated"], true);
    let out = s["stdout"].as_str().unwrap();
    assert!(out.len() < 70_000, "{} bytes kept", out.len());
    assert!(out.starts_with("FLOOD-START"), "head kept");
    assert!(out.trim_end().ends_with("FLOOD-END"), "tail kept");
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn child_gets_limits_a_scrubbed_environment_and_its_own_group() {
    let sb = Sandbox::new(&["basic"]);
    // Inside the workspace: the sandbox lets the run write nowhere else.
    let record = sb.root.join("basic/standin.log");
    let mut env = sb.env(
        &standin("record.sh"),
        &[
            ("TERRARIUM_LIMIT_OPEN_FILES", "321"),
            ("TERRARIUM_LIMIT_CPU_SECS", "77"),
            ("TERRARIUM_LIMIT_FILE_SIZE_BYTES", "10485760"),
            ("TERRARIUM_LIMIT_PROCESSES", "555"),
            ("TERRARIUM_LIMIT_ADDRESS_SPACE_BYTES", "4294967296"),
            ("TERRARIUM_PASSTHROUGH_ENV", "STANDIN_OUT,CLOUD_TOKEN"),
        ],
    );
    env.insert("STANDIN_OUT".into(), record.display().to_string());
    env.insert("CLOUD_TOKEN".into(), "tok-0123456789-secret".into());
    env.insert("UNRELATED_SECRET".into(), "do-not-pass".into());
    env.insert("TF_CLI_ARGS".into(), "-destroy".into());
    env.insert("TF_CLI_ARGS_plan".into(), "-destroy".into());
    env.insert("TF_LOG".into(), "TRACE".into());
    env.insert("TF_CLI_CONFIG_FILE".into(), "/etc/evil.rc".into());
    env.insert("HOME".into(), "/root".into());
    let session = connect(&env).await;
    let r = call(&session, "terraform_init", json!({"path": "basic"})).await;
    ok(&r);
    session.cancel().await.unwrap();
    let log = std::fs::read_to_string(&record).unwrap();
    let limit = |name: &str| -> String {
        log.lines()
            .find(|l| l.starts_with(&format!("LIMIT:{name}")))
            .unwrap_or_else(|| panic!("{name} not in {log}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        limit("Max open files").contains("321 321"),
        "{}",
        limit("Max open files")
    );
    assert!(limit("Max cpu time").contains("77 77"));
    assert!(limit("Max file size").contains("10485760 10485760"));
    assert!(limit("Max processes").contains("555 555"));
    assert!(limit("Max address space").contains("4294967296 4294967296"));
    assert!(limit("Max core file size").contains("0 0"));
    assert!(log.contains("UMASK:0077"), "umask");

    let envs: Vec<&str> = log.lines().filter_map(|l| l.strip_prefix("ENV:")).collect();
    let get = |k: &str| envs.iter().find_map(|e| e.strip_prefix(&format!("{k}=")));
    assert_eq!(get("TF_IN_AUTOMATION"), Some("1"));
    assert_eq!(get("TF_INPUT"), Some("0"));
    assert_eq!(get("CHECKPOINT_DISABLE"), Some("1"));
    assert_eq!(
        get("CLOUD_TOKEN"),
        Some("tok-0123456789-secret"),
        "pass-through reaches terraform"
    );
    for forbidden in [
        "TF_CLI_ARGS",
        "TF_CLI_ARGS_plan",
        "TF_LOG",
        "UNRELATED_SECRET",
    ] {
        assert_eq!(
            get(forbidden),
            None,
            "{forbidden} leaked into terraform's environment"
        );
    }
    let cfg = get("TF_CLI_CONFIG_FILE").unwrap();
    assert!(
        cfg.starts_with(sb.state.to_str().unwrap()),
        "CLI config is the server's own: {cfg}"
    );
    let home = get("HOME").unwrap();
    assert!(
        home.starts_with(sb.state.to_str().unwrap()),
        "private HOME: {home}"
    );

    // Its own session and process group, led by terraform itself, created as PID 1 of the run's
    // PID namespace (no relay process in between, and no visible parent).
    let pg = log.lines().find(|l| l.starts_with("PGID:")).unwrap();
    let field = |name: &str| {
        pg.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}:")))
            .unwrap()
            .to_string()
    };
    assert_eq!(field("PGID"), field("SID"), "{pg}");
    assert_eq!(field("PID"), "1", "{pg}");
    assert_eq!(field("PGID"), field("PID"), "{pg}");
    assert_eq!(field("PPID"), "0", "{pg}");
    assert_ne!(field("PGID"), std::process::id().to_string());

    // The credential is masked in what the caller sees.
    assert!(
        !format!("{r:?}").contains("tok-0123456789-secret"),
        "pass-through value reached the result"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_per_workspace_and_cancellation_interrupts() {
    let sb = Sandbox::new(&["basic"]);
    let env = sb.env(
        &standin("stubborn.sh"),
        &[
            ("TERRARIUM_QUEUE_WAIT_SECS", "1"),
            ("TERRARIUM_KILL_GRACE_SECS", "1"),
        ],
    );
    let session = connect(&env).await;
    let handle = start_call(&session, "terraform_validate", json!({"path": "basic"})).await;
    read_pid(&sb.root.join("basic/parent.pid"));
    read_pid(&sb.root.join("basic/child.pid"));

    let r = call(&session, "terraform_validate", json!({"path": "basic"})).await;
    assert!(is_error(&r));
    assert!(
        sc(&r)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("busy"),
        "{}",
        text(&r)
    );

    handle.cancel(Some("test".into())).await.unwrap();
    assert!(
        none_left_in(&sb.root.join("basic"), 5),
        "cancelled run survived"
    );
    assert!(
        none_left_in(&sb.root.join("basic"), 5),
        "cancelled run's child survived"
    );
    // The workspace is free again once the cancelled run has ended.
    tokio::time::sleep(Duration::from_millis(300)).await;
    session.cancel().await.unwrap();
    let events = sb.audit_events();
    assert!(events.iter().any(|e| e["cancelled"] == true), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_run_cap_holds_across_workspaces() {
    let sb = Sandbox::new(&["basic", "replace"]);
    let env = sb.env(
        &standin("stubborn.sh"),
        &[
            ("TERRARIUM_MAX_CONCURRENT_RUNS", "1"),
            ("TERRARIUM_QUEUE_WAIT_SECS", "1"),
            ("TERRARIUM_KILL_GRACE_SECS", "1"),
        ],
    );
    let session = connect(&env).await;
    let handle = start_call(&session, "terraform_validate", json!({"path": "basic"})).await;
    read_pid(&sb.root.join("basic/parent.pid"));
    let r = call(&session, "terraform_validate", json!({"path": "replace"})).await;
    assert!(is_error(&r));
    assert!(
        text(&r).contains("maximum number of terraform runs"),
        "{}",
        text(&r)
    );
    assert!(
        !sb.root.join("replace/parent.pid").exists(),
        "the second run must not start"
    );
    handle.cancel(Some("test".into())).await.unwrap();
    assert!(none_left_in(&sb.root.join("basic"), 5));
    session.cancel().await.unwrap();
}

/// Issue 11, item 7: a pass-through credential that code in the workspace prints in another
/// shape (base64 alone and inside a longer blob, URL-safe base64, upper case, hex in either case,
/// spaced out) is masked in the result, the progress messages and the audit trail.
#[tokio::test]
async fn pass_through_credentials_are_masked_in_their_common_encodings() {
    const TOKEN: &str = "Tok-0123456789-Secret-abcXYZ";
    let sb = Sandbox::new(&["escape_exec"]);
    let mut env = sb.env(
        &terraform(),
        &[
            ("TERRARIUM_ENABLE_APPLY", "true"),
            ("TERRARIUM_PASSTHROUGH_ENV", "CLOUD_TOKEN"),
        ],
    );
    env.insert("CLOUD_TOKEN".into(), TOKEN.into());
    let command = [
        r#"T="$CLOUD_TOKEN""#,
        r#"printf '%s' "$T" | base64"#,
        r#"printf 'user:%s@host' "$T" | base64 -w0; echo"#,
        r#"printf '%s' "$T" | base64 | tr '+/' '-_'"#,
        r#"printf '%s' "$T" | tr a-z A-Z; echo"#,
        r#"printf '%s' "$T" | od -An -tx1 | tr -d ' \n'; echo"#,
        r#"printf '%s' "$T" | od -An -tx1 | tr -d ' \n' | tr a-f A-F; echo"#,
        r#"printf '%s' "$T" | sed 's/./& /g'; echo"#,
        r#"printf '%s' "$T" | sed 's/./&-/g'; echo"#,
        r#"echo "end of encodings""#,
    ]
    .join("\n");
    let session = connect(&env).await;
    call_ok(&session, "terraform_init", json!({"path": "escape_exec"})).await;
    let plan = call_ok(
        &session,
        "terraform_plan",
        json!({"path": "escape_exec", "vars": {"command": command}}),
    )
    .await;
    let applied = call(
        &session,
        "terraform_apply",
        json!({"path": "escape_exec", "plan_id": plan["plan_id"]}),
    )
    .await;
    let result = serde_json::to_string(ok(&applied)).unwrap();
    let progress: Vec<String> = session
        .service()
        .progress
        .lock()
        .unwrap()
        .iter()
        .filter_map(|p| p.message.clone())
        .collect();
    session.cancel().await.unwrap();
    // The encodings were printed (and masked): otherwise this test would prove nothing.
    assert!(result.contains("end of encodings"), "{result}");
    let stdout = ok(&applied)["stdout"].as_str().unwrap().to_string();
    let masked_lines = stdout
        .lines()
        .filter(|l| l.contains("(local-exec): ") && l.contains("[REDACTED]"))
        .count();
    assert_eq!(masked_lines, 8, "masked lines in {stdout}");

    let b64 = base64(TOKEN.as_bytes());
    let embedded = base64(format!("user:{TOKEN}@host").as_bytes());
    let spaced: String = TOKEN.chars().map(|c| format!("{c} ")).collect();
    let dashed: String = TOKEN.chars().map(|c| format!("{c}-")).collect();
    let hex: String = TOKEN.bytes().map(|b| format!("{b:02x}")).collect();
    // The characters that depend on the token alone (an encoding's edges also carry
    // neighbouring bytes and may stay).
    let forms = [
        TOKEN.to_string(),
        b64[..b64.len() - 4].to_string(),
        b64[..b64.len() - 4].replace('+', "-").replace('/', "_"),
        embedded[7..44].to_string(),
        hex,
        spaced.trim_end().to_string(),
        dashed.trim_end_matches('-').to_string(),
    ];
    for (what, text) in [
        ("result", result.as_str()),
        ("progress", &progress.join("\n")),
        ("audit", &sb.audit_text()),
    ] {
        let text = text.to_lowercase();
        for form in &forms {
            let form = form.to_lowercase();
            let window = 12.min(form.len());
            for i in 0..=form.len() - window {
                let piece = &form[i..i + window];
                assert!(
                    !text.contains(piece),
                    "{piece:?} (of {form:?}) leaked in the {what}: {text}"
                );
            }
        }
    }
    assert!(!progress.is_empty(), "progress was reported");
}
