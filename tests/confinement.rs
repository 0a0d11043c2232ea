//! Attacks on the input: traversal, symlinks, argument injection, oversize and mistyped input.
//! Every rejected call must name the field and spawn nothing: the terraform here is a stand-in
//! that records each run, so "nothing ran" is checked, not assumed.

use std::os::unix::fs::symlink;

use crate::common::*;
use serde_json::{Value, json};

fn recorder_env(
    sb: &Sandbox,
) -> (
    std::collections::BTreeMap<String, String>,
    std::path::PathBuf,
) {
    // Inside the workspace: the sandbox lets the run write nowhere else.
    let record = sb.root.join("basic/standin.log");
    let mut env = sb.env(&standin("record.sh"), &[("TERRARIUM_ENABLE_APPLY", "true")]);
    env.insert("STANDIN_OUT".into(), record.display().to_string());
    env.insert("TERRARIUM_PASSTHROUGH_ENV".into(), "STANDIN_OUT".into());
    (env, record)
}

fn error_of(r: &rmcp::model::CallToolResult) -> Value {
    assert!(is_error(r), "expected an error: {}", text(r));
    sc(r)["error"].clone()
}

#[tokio::test]
async fn traversal_corpus_is_rejected_before_anything_runs() {
    let sb = Sandbox::new(&["basic"]);
    let outside = sb.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("main.tf"), "").unwrap();
    std::fs::write(outside.join("x.tfvars"), "name = \"stolen\"\n").unwrap();
    symlink(&outside, sb.root.join("link_out")).unwrap();
    symlink("../outside", sb.root.join("basic/rel_link")).unwrap();
    symlink(outside.join("x.tfvars"), sb.root.join("basic/evil.tfvars")).unwrap();
    let (env, record) = recorder_env(&sb);
    let session = connect(&env).await;

    let cases: &[(&str, &str)] = &[
        ("..", "confinement"),
        ("../outside", "confinement"),
        ("basic/../..", "confinement"),
        ("basic/../../outside", "confinement"),
        ("./../outside", "confinement"),
        ("link_out", "confinement"),
        ("basic/rel_link", "confinement"),
        ("/etc", "validation"),
        ("/", "validation"),
        ("//etc", "validation"),
        ("basic\u{0}", "validation"),
        ("basic\n", "validation"),
        ("%2e%2e", "confinement"),
        ("%2e%2e%2foutside", "confinement"),
        ("..%2foutside", "confinement"),
        ("basic/%2e%2e/%2e%2e", "confinement"),
        ("\u{2025}", "confinement"),
        ("", "validation"),
        ("does-not-exist", "confinement"),
        ("basic/main.tf", "confinement"),
    ];
    for (path, kind) in cases {
        for tool in [
            "terraform_validate",
            "terraform_plan",
            "terraform_init",
            "terraform_show",
        ] {
            let r = call(&session, tool, json!({"path": path})).await;
            let e = error_of(&r);
            assert_eq!(e["kind"], *kind, "{tool} {path:?}: {e}");
            let m = e["message"].as_str().unwrap();
            assert!(m.contains("path"), "error must name the field: {m}");
        }
    }
    // Var files are confined the same way.
    for vf in [
        "../../outside/x.tfvars",
        "evil.tfvars",
        "../link_out/x.tfvars",
    ] {
        let r = call(
            &session,
            "terraform_plan",
            json!({"path": "basic", "var_files": [vf]}),
        )
        .await;
        let e = error_of(&r);
        assert_eq!(e["kind"], "confinement", "{vf}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains("var_files/0"),
            "{e}"
        );
    }
    session.cancel().await.unwrap();
    assert!(
        !record.exists(),
        "terraform was spawned for a rejected call:\n{}",
        std::fs::read_to_string(&record).unwrap_or_default()
    );

    let events = sb.audit_events();
    assert_eq!(
        events.len(),
        cases.len() * 4 + 3,
        "one audit event per call"
    );
    assert!(events.iter().all(|e| e["success"] == false));
}

#[tokio::test]
async fn caller_values_never_become_flags() {
    let sb = Sandbox::new(&["basic"]);
    std::fs::create_dir_all(sb.root.join("-chdir=")).unwrap();
    std::fs::write(sb.root.join("-chdir=/main.tf"), "").unwrap();
    let (mut env, _) = recorder_env(&sb);
    // The recorded run happens in the "-chdir=" workspace, the only place it may write.
    let record = sb.root.join("-chdir=/standin.log");
    env.insert("STANDIN_OUT".into(), record.display().to_string());
    let session = connect(&env).await;

    // Rejected by the schema: nothing runs.
    for args in [
        json!({"path": "basic", "targets": ["-destroy"]}),
        json!({"path": "basic", "targets": ["x", "-chdir=/"]}),
        json!({"path": "basic", "vars": {"-destroy": true}}),
        json!({"path": "basic", "vars": {"a=b": 1}}),
        json!({"path": "basic", "var_files": ["-var-file=/etc/passwd.tfvars"]}),
        json!({"path": "basic", "destroy": "-true"}),
        json!({"path": "basic", "plan_id": "-chdir=/"}),
    ] {
        let tool = if args.get("plan_id").is_some() {
            "terraform_apply"
        } else {
            "terraform_plan"
        };
        let r = call(&session, tool, args.clone()).await;
        let kind = error_of(&r)["kind"].clone();
        assert!(
            kind == "validation" || kind == "confinement",
            "{args}: {kind}"
        );
    }
    assert!(!record.exists(), "a rejected call spawned terraform");

    // Accepted values that look like flags stay data: in the var file, or after '='.
    let r = call(
        &session,
        "terraform_plan",
        json!({"path": "-chdir=", "vars": {"name": "-destroy", "x": ["-auto-approve"]}, "targets": ["terraform_data.a"]}),
    )
    .await;
    let _ = r;
    let log = std::fs::read_to_string(&record).expect("the stand-in ran");
    // The first recorded run is the plan (a `show` of the plan file follows it).
    let args: Vec<&str> = log
        .lines()
        .take_while(|l| *l != "ARGV-END")
        .filter_map(|l| l.strip_prefix("ARG:"))
        .collect();
    assert_eq!(args[0], "plan");
    for a in &args[1..] {
        let server_flag = [
            "-input=false",
            "-no-color",
            "-json",
            "-out=/",
            "-var-file=/",
            "-target=terraform_data.a",
        ]
        .iter()
        .any(|f| a.starts_with(f));
        assert!(server_flag, "unexpected argv element {a:?} in {args:?}");
    }
    assert!(
        !args.contains(&"-destroy") && !args.contains(&"-auto-approve"),
        "{args:?}"
    );
    // The working directory is the confined workspace, never a flag.
    assert!(!args.iter().any(|a| a.starts_with("-chdir")), "{args:?}");
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn oversize_and_mistyped_input_names_the_field() {
    let sb = Sandbox::new(&["basic"]);
    let (env, record) = recorder_env(&sb);
    let session = connect(&env).await;

    let r = call(&session, "terraform_plan", json!({"path": 42})).await;
    let e = error_of(&r);
    assert_eq!(e["fields"][0]["pointer"], "/path");

    let r = call(
        &session,
        "terraform_plan",
        json!({"path": "basic", "refresh": "yes", "targets": "a"}),
    )
    .await;
    let e = error_of(&r);
    let pointers: Vec<&str> = e["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers.contains(&"/refresh") && pointers.contains(&"/targets"),
        "{pointers:?}"
    );

    let r = call(
        &session,
        "terraform_plan",
        json!({"path": "basic", "chdir": "/"}),
    )
    .await;
    let e = error_of(&r);
    assert!(
        e["message"].as_str().unwrap().contains("chdir"),
        "unknown field is named: {e}"
    );

    let r = call(&session, "terraform_plan", json!({})).await;
    assert!(error_of(&r)["message"].as_str().unwrap().contains("path"));

    let long = "a/".repeat(600);
    let r = call(&session, "terraform_validate", json!({"path": long})).await;
    assert_eq!(error_of(&r)["fields"][0]["pointer"], "/path");

    let big = "x".repeat(300 * 1024);
    let r = call(
        &session,
        "terraform_plan",
        json!({"path": "basic", "vars": {"blob": big}}),
    )
    .await;
    let e = error_of(&r);
    assert!(e["message"].as_str().unwrap().contains("limit"), "{e}");
    assert!(
        !text(&r).contains("xxxxxxxx"),
        "the oversize value is not echoed"
    );

    let many: serde_json::Map<String, Value> =
        (0..300).map(|i| (format!("v{i}"), json!(i))).collect();
    let r = call(
        &session,
        "terraform_plan",
        json!({"path": "basic", "vars": many}),
    )
    .await;
    assert_eq!(error_of(&r)["fields"][0]["pointer"], "/vars");

    let r = call(&session, "terraform_import", json!({"path": "basic"})).await;
    assert!(is_error(&r));
    assert_eq!(sc(&r)["error"]["kind"], "policy");
    for tool in [
        "terraform_state_rm",
        "terraform_console",
        "terraform_taint",
        "terraform_force_unlock",
    ] {
        assert!(
            is_error(&call(&session, tool, json!({"path": "basic"})).await),
            "{tool}"
        );
    }

    session.cancel().await.unwrap();
    assert!(!record.exists(), "a rejected call spawned terraform");
    let audit = sb.audit_text();
    assert!(
        !audit.contains("xxxxxxxx"),
        "rejected values never reach the audit trail"
    );
}
