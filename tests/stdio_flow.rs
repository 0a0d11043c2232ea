//! The main flow over stdio with rmcp's client and the real Terraform 1.15.5.

use crate::common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn tools_list_advertises_the_schema_files_and_true_annotations() {
    let (sb, session) = Setup::new(&["basic"]).stdio().await;
    let tools = session.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "workspace_list",
            "terraform_version",
            "terraform_init",
            "terraform_validate",
            "terraform_fmt",
            "terraform_plan",
            "terraform_show",
            "terraform_output",
            "terraform_graph",
            "terraform_providers"
        ],
        "apply is not listed unless enabled"
    );
    for t in &tools {
        let file = manifest_dir().join(format!("schemas/{}.json", t.name));
        let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert_eq!(
            Value::Object((*t.input_schema).clone()),
            on_disk,
            "{} schema differs from its file",
            t.name
        );
        let a = t.annotations.as_ref().expect("annotations");
        let read_only = a.read_only_hint == Some(true);
        let expect_read_only = matches!(
            t.name.as_ref(),
            "workspace_list"
                | "terraform_version"
                | "terraform_validate"
                | "terraform_plan"
                | "terraform_show"
                | "terraform_output"
                | "terraform_graph"
                | "terraform_providers"
        );
        assert_eq!(read_only, expect_read_only, "{}", t.name);
    }
    session.cancel().await.unwrap();

    let session = connect(&sb.env(&terraform(), &[("TERRARIUM_ENABLE_APPLY", "true")])).await;
    let tools = session.list_all_tools().await.unwrap();
    let apply = tools
        .iter()
        .find(|t| t.name == "terraform_apply")
        .expect("apply listed when enabled");
    let a = apply.annotations.as_ref().unwrap();
    assert_eq!(a.read_only_hint, Some(false));
    assert_eq!(a.destructive_hint, Some(true));
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn init_validate_plan_show_apply_output_end_to_end() {
    let (sb, session) = Setup::new(&["basic", "module_user", "unformatted", "invalid"])
        .envs(&[("TERRARIUM_ENABLE_APPLY", "true")])
        .stdio()
        .await;

    let r = call_ok(&session, "workspace_list", json!({})).await;
    assert_eq!(
        r["workspaces"],
        json!([
            "basic",
            "invalid",
            "module_user",
            "module_user/modules/greeter",
            "unformatted"
        ])
    );

    let r = call_ok(&session, "terraform_version", json!({})).await;
    assert_eq!(r["terraform_version"], "1.15.5");

    let r = call_ok(&session, "terraform_init", json!({"path": "basic"})).await;
    assert_eq!(r["exit_code"], 0);
    assert!(
        r["stdout"]
            .as_str()
            .unwrap()
            .contains("successfully initialized")
    );

    let r = call_ok(&session, "terraform_validate", json!({"path": "basic"})).await;
    assert_eq!(r["valid"], true);

    let r = call(&session, "terraform_init", json!({"path": "invalid"})).await;
    let _ = r;
    let r = call(&session, "terraform_validate", json!({"path": "invalid"})).await;
    assert!(is_error(&r));
    let s = sc(&r);
    assert_eq!(s["valid"], false);
    assert!(
        s["diagnostics"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("undeclared input variable"),
        "{s}"
    );

    let r = call_ok(&session, "terraform_fmt", json!({"path": "unformatted"})).await;
    assert_eq!(r["formatted"], false);
    assert_eq!(r["files"], json!(["main.tf"]));
    let before = std::fs::read_to_string(sb.root.join("unformatted/main.tf")).unwrap();
    assert!(before.contains("input=\"x\""), "check mode must not write");
    let r = call_ok(
        &session,
        "terraform_fmt",
        json!({"path": "unformatted", "write": true}),
    )
    .await;
    assert_eq!(r["files"], json!(["main.tf"]));
    let r = call_ok(&session, "terraform_fmt", json!({"path": "unformatted"})).await;
    assert_eq!(r["formatted"], true);

    let r = call(
        &session,
        "terraform_plan",
        json!({"path": "basic", "vars": {"db_password": "hunter2-very-secret"}, "var_files": ["prod.tfvars"]}),
    )
    .await;
    let plan = ok(&r).clone();
    let plan_id = plan["plan_id"].as_str().unwrap().to_string();
    assert_eq!(plan_id.len(), 32);
    assert_eq!(
        plan["summary"]["counts"],
        json!({"add": 1, "change": 0, "destroy": 0, "replace": 0})
    );
    assert_eq!(
        plan["summary"]["resource_changes"][0]["address"],
        "terraform_data.greeting"
    );
    assert_eq!(
        plan["summary"]["resource_changes"][0]["actions"],
        json!(["create"])
    );
    assert_eq!(plan["changes"], true);
    let all = format!("{r:?}");
    assert!(
        !all.contains("hunter2-very-secret"),
        "sensitive variable leaked into the plan result"
    );
    // The plan lives in the server's state dir, outside the workspace root.
    assert!(sb.state.join(format!("plans/{plan_id}.tfplan")).exists());
    assert!(
        !sb.root.join("basic").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with("tfplan"))
    );

    let shown = call_ok(
        &session,
        "terraform_show",
        json!({"path": "basic", "plan_id": plan_id}),
    )
    .await;
    assert_eq!(
        shown["plan"]["resource_changes"][0]["address"],
        "terraform_data.greeting"
    );
    assert_eq!(shown["summary"]["counts"]["add"], 1);

    let r = call_ok(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": plan_id}),
    )
    .await;
    assert_eq!(
        r["resources_affected"],
        json!({"add": 1, "change": 0, "destroy": 0})
    );
    assert_eq!(r["outputs"]["greeting"]["value"], "hello from-var-file");
    assert_eq!(r["outputs"]["password"]["value"], "(sensitive value)");

    let r = call(&session, "terraform_output", json!({"path": "basic"})).await;
    let out = ok(&r).clone();
    assert_eq!(out["outputs"]["greeting"]["value"], "hello from-var-file");
    assert!(!format!("{r:?}").contains("hunter2-very-secret"));
    let one = call_ok(
        &session,
        "terraform_output",
        json!({"path": "basic", "name": "greeting"}),
    )
    .await;
    assert_eq!(one["outputs"].as_object().unwrap().len(), 1);
    let r = call(
        &session,
        "terraform_output",
        json!({"path": "basic", "name": "password"}),
    )
    .await;
    assert!(!format!("{r:?}").contains("hunter2-very-secret"));

    let st = call_ok(&session, "terraform_show", json!({"path": "basic"})).await;
    assert_eq!(st["state"]["resource_count"], 1);
    assert_eq!(
        st["state"]["resources"][0]["address"],
        "terraform_data.greeting"
    );

    let g = call_ok(&session, "terraform_graph", json!({"path": "basic"})).await;
    assert!(g["dot"].as_str().unwrap().contains("digraph"));
    let p = call_ok(&session, "terraform_providers", json!({"path": "basic"})).await;
    assert!(p["stdout"].as_str().unwrap().contains("terraform"), "{p}");

    // Local modules work (inside the workspace).
    call_ok(&session, "terraform_init", json!({"path": "module_user"})).await;
    let r = call_ok(&session, "terraform_plan", json!({"path": "module_user"})).await;
    assert_eq!(
        r["summary"]["resource_changes"][0]["address"],
        "module.greeter.terraform_data.g"
    );

    session.cancel().await.unwrap();

    // One audit event per call, with the core fields.
    let events = sb.audit_events();
    assert!(events.len() >= 20, "{} events", events.len());
    for e in &events {
        for field in [
            "timestamp",
            "event",
            "request_id",
            "principal",
            "transport",
            "tool",
            "duration",
            "success",
        ] {
            assert!(e.get(field).is_some(), "{field} missing in {e}");
        }
        assert_eq!(e["principal"], "stdio");
    }
    let apply = events
        .iter()
        .find(|e| e["tool"] == "terraform_apply")
        .unwrap();
    assert_eq!(apply["workspace"], "basic");
    assert_eq!(apply["exit_code"], 0);
    assert_eq!(apply["resources_affected"]["add"], 1);
    let audit_text = sb.audit_text();
    assert!(!audit_text.contains("hunter2-very-secret"));
}

#[tokio::test]
async fn progress_notifications_are_forwarded() {
    let (_sb, session) = Setup::new(&["basic"]).stdio().await;
    call_ok(&session, "terraform_init", json!({"path": "basic"})).await;
    let handle = start_call(&session, "terraform_plan", json!({"path": "basic"})).await;
    let _ = handle.await_response().await.unwrap();
    let messages: Vec<String> = session
        .service()
        .progress
        .lock()
        .unwrap()
        .iter()
        .filter_map(|p| p.message.clone())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("terraform_data.greeting: Plan to create")),
        "progress: {messages:?}"
    );
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn terraform_1_0_3_smoke() {
    let sb = Sandbox::new(&["outputs_only"]);
    let session =
        connect(&sb.env(&terraform_legacy(), &[("TERRARIUM_ENABLE_APPLY", "true")])).await;
    let v = call_ok(&session, "terraform_version", json!({})).await;
    assert_eq!(v["terraform_version"], "1.0.3");
    call_ok(&session, "terraform_init", json!({"path": "outputs_only"})).await;
    let r = call_ok(
        &session,
        "terraform_validate",
        json!({"path": "outputs_only"}),
    )
    .await;
    assert_eq!(r["valid"], true);
    let plan = call_ok(
        &session,
        "terraform_plan",
        json!({"path": "outputs_only", "vars": {"who": "legacy"}}),
    )
    .await;
    let id = plan["plan_id"].as_str().unwrap();
    let r = call_ok(
        &session,
        "terraform_apply",
        json!({"path": "outputs_only", "plan_id": id}),
    )
    .await;
    assert_eq!(r["exit_code"], 0);
    let out = call_ok(
        &session,
        "terraform_output",
        json!({"path": "outputs_only"}),
    )
    .await;
    assert_eq!(out["outputs"]["message"]["value"], "hello legacy");
    session.cancel().await.unwrap();
}
