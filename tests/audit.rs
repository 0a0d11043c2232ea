//! The audit trail end to end: event kinds and fields, the hash chain and `audit verify`
//! against edits, deletions, insertions, reorders and torn lines, restarts, signals, syslog,
//! retention, fail-closed apply, and no secret in any log or event.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

fn verify(files: &[PathBuf]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_terrarium"))
        .args(["audit", "verify"])
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A session that leaves a few events of several kinds in the trail.
async fn some_activity(sb: &Sandbox) {
    let before = sb
        .all_audit_events_lenient()
        .iter()
        .filter(|e| e["event"] == "shutdown")
        .count();
    let session = connect(&sb.env(&terraform(), &[])).await;
    call_ok(&session, "terraform_init", json!({"path": "basic"})).await;
    call_ok(
        &session,
        "terraform_plan",
        json!({"path": "basic", "vars": {"name": "x"}}),
    )
    .await;
    let _ = call(&session, "terraform_plan", json!({"path": "../x"})).await;
    let _ = call(
        &session,
        "terraform_plan",
        json!({"path": "basic", "targets": ["-x"]}),
    )
    .await;
    let _ = call(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": "0".repeat(32)}),
    )
    .await;
    session.cancel().await.unwrap();
    // The server writes its shutdown event after the client has gone.
    for _ in 0..50 {
        if sb
            .all_audit_events_lenient()
            .iter()
            .filter(|e| e["event"] == "shutdown")
            .count()
            > before
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_kind_of_event_has_its_fields() {
    let sb = Sandbox::new(&["basic"]);
    some_activity(&sb).await;
    let events = sb.all_audit_events();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "startup",
            "terraform_operation",
            "terraform_operation",
            "confinement_rejected",
            "validation_rejected",
            "authorization_denied",
            "shutdown"
        ]
    );
    for (i, e) in events.iter().enumerate() {
        for f in ["timestamp", "level", "event", "seq", "prev_hash", "hash"] {
            assert!(e.get(f).is_some(), "{f} missing in {e}");
        }
        assert_eq!(e["seq"], (i + 1) as u64);
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let startup = &events[0];
    assert_eq!(
        startup["config"]["TERRARIUM_WORKSPACE_ROOT"],
        sb.root.display().to_string()
    );
    assert_eq!(startup["sandbox"]["mode"], "strict");
    let plan = &events[2];
    for f in [
        "request_id",
        "principal",
        "transport",
        "tool",
        "action",
        "workspace",
        "duration",
        "success",
        "exit_code",
        "timed_out",
        "plan_id",
        "resources_affected",
    ] {
        assert!(plan.get(f).is_some(), "{f} missing in {plan}");
    }
    assert_eq!(plan["principal"], "stdio");
    assert_eq!(plan["transport"], "stdio");
    assert_eq!(plan["action"], "plan");
    assert_eq!(plan["variables"], json!(["name"]));
    assert_eq!(
        plan["resources_affected"],
        json!({"add": 1, "change": 0, "destroy": 0})
    );
    assert_eq!(events[4]["fields"], json!(["/targets/0"]));
    assert!(
        !events[4].to_string().contains("\"-x\""),
        "the rejected value is not recorded"
    );
    assert_eq!(events[6]["reason"], "stdin closed");
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[tokio::test]
async fn verify_finds_edits_deletions_insertions_and_reorders() {
    let sb = Sandbox::new(&["basic"]);
    some_activity(&sb).await;
    let files = sb.audit_files();
    assert_eq!(files.len(), 1);
    let (code, out) = verify(&files);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("chain intact"), "{out}");

    let lines: Vec<String> = std::fs::read_to_string(&files[0])
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let tampered = sb.dir.path().join("tampered.jsonl");
    let check = |lines: Vec<String>, kind: &str, line: usize| {
        write_lines(&tampered, &lines);
        let (code, out) = verify(std::slice::from_ref(&tampered));
        assert_eq!(code, 1, "{kind}: {out}");
        assert!(
            out.contains(&format!("{kind} at {}:{line}", tampered.display())),
            "{kind}: {out}"
        );
    };

    // An edit: one field changed.
    let mut edited = lines.clone();
    edited[2] = edited[2].replace("\"success\":true", "\"success\":false");
    assert_ne!(edited[2], lines[2]);
    check(edited, "Edited", 3);

    // A deletion.
    let mut deleted = lines.clone();
    deleted.remove(3);
    check(deleted, "Deleted", 4);

    // A reorder.
    let mut reordered = lines.clone();
    reordered.swap(2, 3);
    check(reordered, "Reordered", 3);

    // An insertion of a well-formed, correctly hashed event in the middle of the chain.
    let mut inserted = lines.clone();
    let prev: Value = serde_json::from_str(&lines[1]).unwrap();
    let mut forged = json!({"timestamp": "2026-01-01T00:00:00.000Z", "level": "info", "event": "terraform_operation",
        "tool": "terraform_apply", "success": true})
    .as_object()
    .unwrap()
    .clone();
    terrarium_core::audit::chain::link(
        &mut forged,
        &terrarium_core::audit::chain::Head {
            seq: prev["seq"].as_u64().unwrap(),
            hash: prev["hash"].as_str().unwrap().to_string(),
        },
    );
    inserted.insert(2, Value::Object(forged).to_string());
    check(inserted, "Inserted", 4);
}

#[tokio::test]
async fn the_chain_survives_restarts_and_a_torn_line_is_reported() {
    let sb = Sandbox::new(&["basic"]);
    some_activity(&sb).await;
    let file = sb.audit_files()[0].clone();
    // A crash mid-write: half a line at the end.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"timestamp\":\"2026-").unwrap();
    drop(f);
    some_activity(&sb).await;
    let events = sb.all_audit_events_lenient();
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=14).collect::<Vec<_>>(),
        "the chain continues after the restart"
    );
    assert_eq!(events[7]["event"], "startup");
    assert_eq!(events[7]["audit_recovered_torn_line"], true);
    let (code, out) = verify(&sb.audit_files());
    assert_eq!(code, 2, "torn but otherwise intact: {out}");
    assert!(out.contains("Torn at") && out.contains(":8 "), "{out}");
}

#[tokio::test]
async fn sigterm_and_sighup_are_audited() {
    let sb = Sandbox::new(&["basic"]);
    let (session, pid) = connect_as(&sb.env(&terraform(), &[]), None).await;
    call_ok(&session, "terraform_validate", json!({"path": "basic"})).await;
    unsafe {
        libc::kill(pid as i32, libc::SIGHUP);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    for _ in 0..50 {
        if sb
            .all_audit_events()
            .iter()
            .any(|e| e["event"] == "shutdown")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kinds: Vec<String> = sb
        .all_audit_events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "startup",
            "terraform_operation",
            "config_reload",
            "shutdown"
        ]
    );
    let last = sb.all_audit_events().pop().unwrap();
    assert_eq!(last["reason"], "SIGTERM");
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_run_interrupts_it_and_loses_no_event() {
    let sb = Sandbox::new(&["basic"]);
    let env = sb.env(
        &standin("stubborn.sh"),
        &[
            ("TERRARIUM_SHUTDOWN_GRACE_SECS", "1"),
            ("TERRARIUM_KILL_GRACE_SECS", "1"),
        ],
    );
    let (session, pid) = connect_as(&env, None).await;
    let slow = spawn_call(&session, "terraform_validate", json!({"path": "basic"}));
    read_pid(&sb.root.join("basic/parent.pid"));
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    assert!(
        none_left_in(&sb.root.join("basic"), 10),
        "the run survived shutdown"
    );
    for _ in 0..100 {
        if sb
            .all_audit_events()
            .iter()
            .any(|e| e["event"] == "shutdown")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = sb.all_audit_events();
    let run = events
        .iter()
        .find(|e| e["tool"] == "terraform_validate")
        .expect("the interrupted run is audited");
    assert_eq!(run["cancelled"], true);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "shutdown");
    assert_eq!(last["runs_interrupted"], 1);
    let _ = slow.await;
    assert_eq!(verify(&sb.audit_files()).0, 0);
}

#[tokio::test]
async fn syslog_receives_rfc5424_frames_over_udp_and_tcp() {
    let sb = Sandbox::new(&["basic"]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp_url = format!("udp://{}", udp.local_addr().unwrap());
    let tcp_url = format!("tcp://{}", tcp.local_addr().unwrap());

    let session = connect(&sb.env(&terraform(), &[("TERRARIUM_AUDIT_SYSLOG", &udp_url)])).await;
    call_ok(&session, "terraform_validate", json!({"path": "basic"})).await;
    let mut buf = [0u8; 65536];
    let mut frames = Vec::new();
    for _ in 0..2 {
        let n = udp.recv(&mut buf).unwrap();
        frames.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    session.cancel().await.unwrap();

    let session = connect(&sb.env(&terraform(), &[("TERRARIUM_AUDIT_SYSLOG", &tcp_url)])).await;
    let (stream, _) = tcp.accept().unwrap();
    call_ok(&session, "terraform_validate", json!({"path": "basic"})).await;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    for _ in 0..2 {
        // Octet counting: "LEN SP MSG".
        let mut len = Vec::new();
        reader.read_until(b' ', &mut len).unwrap();
        let n: usize = String::from_utf8_lossy(&len).trim().parse().unwrap();
        let mut msg = vec![0u8; n];
        reader.read_exact(&mut msg).unwrap();
        frames.push(String::from_utf8(msg).unwrap());
    }
    session.cancel().await.unwrap();

    let file_events = sb.all_audit_events();
    for frame in &frames {
        // <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD SP MSG
        let parts: Vec<&str> = frame.splitn(8, ' ').collect();
        assert_eq!(parts.len(), 8, "{frame}");
        let pri: u32 = parts[0]
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(pri / 8, 13, "facility log audit: {frame}");
        assert!(parts[0].ends_with(">1"), "version 1: {frame}");
        assert!(parts[1].ends_with('Z'));
        assert_eq!(parts[3], "terrarium");
        assert_eq!(parts[6], "-");
        let msg: Value = serde_json::from_str(parts[7]).unwrap();
        assert_eq!(parts[5], msg["event"].as_str().unwrap());
        assert!(
            file_events.iter().any(|e| e["hash"] == msg["hash"]),
            "the same event as in the file"
        );
    }
    assert_eq!(
        frames
            .iter()
            .filter(|f| f.contains("terraform_operation"))
            .count(),
        2
    );
}

#[tokio::test]
async fn old_files_are_removed_after_the_retention_period() {
    let sb = Sandbox::new(&["basic"]);
    std::fs::create_dir_all(&sb.audit).unwrap();
    for date in ["2020-01-01", "2020-01-02"] {
        std::fs::write(sb.audit.join(format!("audit-{date}.jsonl")), "").unwrap();
    }
    let session = connect(&sb.env(&terraform(), &[("TERRARIUM_AUDIT_RETENTION_DAYS", "7")])).await;
    session.cancel().await.unwrap();
    let names: Vec<String> = sb
        .audit_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(!names[0].contains("2020-"), "{names:?}");
}

#[tokio::test]
async fn apply_fails_closed_when_the_trail_cannot_be_written() {
    let sb = Sandbox::new(&["basic"]);
    std::fs::create_dir_all(&sb.audit).unwrap();
    // Today's file is a device that refuses every write.
    let today = terrarium_core::audit::time::date(std::time::SystemTime::now());
    std::os::unix::fs::symlink("/dev/full", sb.audit.join(format!("audit-{today}.jsonl"))).unwrap();
    let session = connect(&sb.env(&terraform(), &[("TERRARIUM_ENABLE_APPLY", "true")])).await;
    call_ok(&session, "terraform_init", json!({"path": "basic"})).await;
    let plan = call_ok(&session, "terraform_plan", json!({"path": "basic"})).await;
    let r = call(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": plan["plan_id"]}),
    )
    .await;
    assert!(is_error(&r));
    assert_eq!(sc(&r)["error"]["kind"], "audit", "{}", text(&r));
    assert!(
        text(&r).contains("audit trail cannot be written"),
        "{}",
        text(&r)
    );
    assert!(
        !sb.root.join("basic/terraform.tfstate").exists(),
        "nothing was applied"
    );
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn personal_data_can_be_left_out() {
    let sb = Sandbox::new(&["basic"]);
    let session = connect(&sb.env(
        &terraform(),
        &[("TERRARIUM_AUDIT_OMIT_PERSONAL_DATA", "true")],
    ))
    .await;
    call_ok(&session, "terraform_validate", json!({"path": "basic"})).await;
    session.cancel().await.unwrap();
    let e = sb.audit_events().pop().unwrap();
    assert!(
        e.get("principal").is_none() && e.get("source_ip").is_none(),
        "{e}"
    );
    assert_eq!(verify(&sb.audit_files()).0, 0);
}

#[tokio::test]
async fn no_secret_reaches_any_log_event_or_result_at_debug_level() {
    const TOKEN: &str = "tok-PASSTHROUGH-0a1b2c3d4e5f";
    const VAR_SECRET: &str = "var-SENSITIVE-9z8y7x6w";
    const NAMED_SECRET: &str = "named-SECRET-value-5544";
    let sb = Sandbox::new(&["basic"]);
    let log = sb.dir.path().join("diagnostics.log");
    let mut env = sb.env(
        &terraform(),
        &[
            ("TERRARIUM_ENABLE_APPLY", "true"),
            ("TERRARIUM_ENABLE_DESTROY", "true"),
            ("TERRARIUM_LOG_LEVEL", "debug"),
            ("TERRARIUM_LOG_FILE", log.to_str().unwrap()),
            ("TERRARIUM_PASSTHROUGH_ENV", "CLOUD_API_TOKEN"),
            ("TERRARIUM_AUDIT_STDERR", "true"),
        ],
    );
    env.insert("CLOUD_API_TOKEN".into(), TOKEN.into());
    let session = connect(&env).await;
    let mut results = String::new();
    let mut run = |r: rmcp::model::CallToolResult| results.push_str(&format!("{r:?}\n"));
    run(call(&session, "workspace_list", json!({})).await);
    run(call(&session, "terraform_version", json!({})).await);
    run(call(&session, "terraform_init", json!({"path": "basic"})).await);
    run(call(&session, "terraform_validate", json!({"path": "basic"})).await);
    run(call(&session, "terraform_fmt", json!({"path": "basic"})).await);
    let vars = json!({"db_password": VAR_SECRET, "name": "n", "api_token": NAMED_SECRET});
    let r = call(
        &session,
        "terraform_plan",
        json!({"path": "basic", "vars": vars}),
    )
    .await;
    let plan_id = sc(&r)["plan_id"].clone();
    run(r);
    run(call(
        &session,
        "terraform_show",
        json!({"path": "basic", "plan_id": plan_id}),
    )
    .await);
    run(call(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": plan_id}),
    )
    .await);
    run(call(&session, "terraform_output", json!({"path": "basic"})).await);
    run(call(
        &session,
        "terraform_output",
        json!({"path": "basic", "name": "password"}),
    )
    .await);
    run(call(&session, "terraform_show", json!({"path": "basic"})).await);
    run(call(&session, "terraform_graph", json!({"path": "basic"})).await);
    run(call(&session, "terraform_providers", json!({"path": "basic"})).await);
    let r = call(
        &session,
        "terraform_plan",
        json!({"path": "basic", "destroy": true, "vars": vars}),
    )
    .await;
    let plan_id = sc(&r)["plan_id"].clone();
    run(r);
    run(call(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": plan_id}),
    )
    .await);
    session.cancel().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("DEBUG"),
        "debug logging was on: {log_text}"
    );
    let audit = sb.audit_text();
    assert!(
        audit.contains("\"variables\":[\"api_token\",\"db_password\",\"name\"]"),
        "{audit}"
    );
    for secret in [TOKEN, VAR_SECRET, NAMED_SECRET] {
        assert!(!log_text.contains(secret), "{secret} in the diagnostic log");
        assert!(!audit.contains(secret), "{secret} in the audit trail");
        assert!(!results.contains(secret), "{secret} in a tool result");
    }
}

/// The README promises no argument values in events. Every string argument of every tool that
/// fails here carries a unique marker (some are echoed by the message the caller gets, such as
/// `terraform_output`'s `name` or `github_prepare_workspace`'s `ref` and `subdir`); none may
/// reach the trail. Confinement rejections record the field pointer instead of the path.
#[tokio::test(flavor = "multi_thread")]
async fn failed_calls_never_copy_caller_values_into_the_trail() {
    use crate::common::github::{APP_ID, MockGitHub, app_private_key};
    const M: &str = "Zq9Mark";
    const HEX: &str = "d00dfeedd00dfeedd00dfeedd00dfeed";
    let mock = MockGitHub::start().await;
    mock.serve_dir(
        "acme/infra",
        "main",
        &manifest_dir().join("tests/fixtures/gh_repo"),
    );
    let sb = Sandbox::new(&["basic"]);
    let app_id = APP_ID.to_string();
    let url = mock.url();
    let key = app_private_key();
    let session = connect(&sb.env(
        &terraform(),
        &[
            ("TERRARIUM_GITHUB_APP_ID", &app_id),
            ("TERRARIUM_GITHUB_PRIVATE_KEY", &key),
            ("TERRARIUM_GITHUB_API_URL", &url),
            ("TERRARIUM_GITHUB_REPOS", "acme/*"),
            ("TERRARIUM_ENABLE_APPLY", "true"),
        ],
    ))
    .await;
    call_ok(&session, "terraform_init", json!({"path": "basic"})).await;
    let m = |i: u32| format!("{M}{i}");
    let calls = [
        ("terraform_output", json!({"path": "basic", "name": m(1)})),
        (
            "github_prepare_workspace",
            json!({"owner": "acme", "repo": "infra", "ref": m(2)}),
        ),
        (
            "github_prepare_workspace",
            json!({"owner": "acme", "repo": "infra", "ref": "main", "subdir": m(3)}),
        ),
        (
            "github_prepare_workspace",
            json!({"owner": m(4), "repo": "infra", "ref": "main"}),
        ),
        (
            "github_prepare_workspace",
            json!({"owner": "acme", "repo": m(5), "ref": "main"}),
        ),
        (
            "github_prepare_workspace",
            json!({"owner": "acme", "repo": "infra", "ref": format!("{}..x", m(6))}),
        ),
        ("terraform_validate", json!({"path": m(7)})),
        ("terraform_plan", json!({"path": format!("../{}", m(8))})),
        (
            "terraform_plan",
            json!({"path": "basic", "var_files": [format!("{}.tfvars", m(9))]}),
        ),
        (
            "terraform_plan",
            json!({"path": "basic", "var_files": [format!("../../{}.tfvars", m(10))]}),
        ),
        ("terraform_show", json!({"path": "basic", "plan_id": HEX})),
        ("terraform_apply", json!({"path": "basic", "plan_id": HEX})),
        (
            "terraform_apply",
            json!({"path": "basic", "plan_id": m(11)}),
        ),
        ("terraform_fmt", json!({"path": m(12)})),
        ("terraform_graph", json!({"path": "basic", "type": m(13)})),
        ("terraform_providers", json!({"path": m(14)})),
        ("terraform_init", json!({"path": m(15)})),
        ("terraform_output", json!({"path": m(16)})),
        ("terraform_show", json!({"path": m(17)})),
    ];
    let mut shown = 0;
    for (tool, args) in &calls {
        let r = call(&session, tool, args.clone()).await;
        assert!(is_error(&r), "{tool} {args} should fail: {}", text(&r));
        if text(&r).contains(M) {
            shown += 1;
        }
    }
    assert!(
        shown >= 3,
        "the caller is told which value was wrong (name, ref, subdir): {shown}"
    );
    session.cancel().await.unwrap();
    let trail = sb.audit_text();
    assert!(!trail.contains(M), "a caller value reached the audit trail");
    assert!(!trail.contains(HEX), "a plan id reached the audit trail");
    let events = sb.audit_events();
    assert!(events.len() > calls.len(), "every call is audited");
    // A confinement rejection says which field was refused, never the value.
    let confinement: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "confinement_rejected")
        .collect();
    assert!(!confinement.is_empty());
    for e in &confinement {
        assert!(
            e["fields"].as_array().is_some_and(
                |f| !f.is_empty() && f.iter().all(|p| p.as_str().unwrap().starts_with('/'))
            ),
            "{e}"
        );
    }
    assert!(
        confinement
            .iter()
            .any(|e| e["fields"] == json!(["/var_files/0"]) && e["workspace"] == "basic"),
        "{confinement:?}"
    );
    assert!(confinement.iter().any(|e| e["fields"] == json!(["/path"])));
}

/// Two servers on one state dir (an MCP client that starts the same server twice) would both
/// extend the hash chain from their own idea of its head, and `audit verify` would report an
/// insertion nobody made. The second is refused at start-up, naming the lock and the fix; the
/// first goes on and the chain verifies.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_on_the_same_trail_is_refused_and_the_chain_holds() {
    let sb = Sandbox::new(&["basic"]);
    let env = sb.env(&terraform(), &[]);
    let first = connect(&env).await;
    call_ok(&first, "terraform_validate", json!({"path": "basic"})).await;

    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_terrarium"))
        .arg("serve")
        .env_clear()
        .envs(&env)
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(30) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if status.is_none() {
        let _ = second.kill();
        let _ = second.wait();
    }
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();

    // The first server is unaffected.
    call_ok(&first, "terraform_validate", json!({"path": "basic"})).await;
    first.cancel().await.unwrap();
    for _ in 0..50 {
        if sb
            .all_audit_events_lenient()
            .iter()
            .any(|e| e["event"] == "shutdown")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, report) = verify(&sb.audit_files());
    assert!(
        status.is_some_and(|s| !s.success()),
        "the second server did not refuse to start: {stderr}"
    );
    assert!(
        stderr.contains("lock") && stderr.contains(&sb.audit.display().to_string()),
        "the error names the lock: {stderr}"
    );
    assert!(
        stderr.contains("TERRARIUM_STATE_DIR"),
        "and the fix: {stderr}"
    );
    assert_eq!(code, 0, "{report}");
    let startups = sb
        .all_audit_events()
        .iter()
        .filter(|e| e["event"] == "startup")
        .count();
    assert_eq!(startups, 1, "only the first server wrote to the trail");
}
