//! Saved plans and the apply policy, against real Terraform and real `terraform_data` resources.

mod common;

use common::*;
use serde_json::json;

fn err_message(r: &rmcp::model::CallToolResult) -> String {
    assert!(is_error(r), "expected an error: {}", text(r));
    sc(r)["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn apply_is_disabled_by_default() {
    let sb = Sandbox::new(&["basic"]);
    let session = connect(&sb.env(&terraform(), &[])).await;
    call_ok(&session, "terraform_init", json!({"path": "basic"})).await;
    let plan = call_ok(&session, "terraform_plan", json!({"path": "basic"})).await;
    let r = call(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": plan["plan_id"]}),
    )
    .await;
    let m = err_message(&r);
    assert!(m.contains("TERRARIUM_ENABLE_APPLY=true"), "{m}");
    assert!(
        !sb.root.join("basic/terraform.tfstate").exists(),
        "nothing was applied"
    );
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn plans_are_single_use_bound_to_their_workspace_and_tamper_evident() {
    let sb = Sandbox::new(&["basic", "outputs_only"]);
    let session = connect(&sb.env(&terraform(), &[("TERRARIUM_ENABLE_APPLY", "true")])).await;
    call_ok(&session, "terraform_init", json!({"path": "basic"})).await;

    // Wrong workspace.
    let plan = call_ok(&session, "terraform_plan", json!({"path": "basic"})).await;
    let id = plan["plan_id"].as_str().unwrap().to_string();
    let r = call(
        &session,
        "terraform_apply",
        json!({"path": "outputs_only", "plan_id": id}),
    )
    .await;
    assert!(err_message(&r).contains("was made for workspace basic"));

    // Unknown id.
    let r = call(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": "0".repeat(32)}),
    )
    .await;
    assert!(err_message(&r).contains("no such plan"));

    // Tampered plan file.
    let file = sb.state.join(format!("plans/{id}.tfplan"));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.push(0);
    std::fs::write(&file, bytes).unwrap();
    let r = call(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": id}),
    )
    .await;
    assert!(
        err_message(&r).contains("changed since it was made"),
        "{}",
        text(&r)
    );
    assert!(!sb.root.join("basic/terraform.tfstate").exists());

    // A good plan applies once, and only once.
    let plan = call_ok(&session, "terraform_plan", json!({"path": "basic"})).await;
    let id = plan["plan_id"].as_str().unwrap().to_string();
    call_ok(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": id}),
    )
    .await;
    let r = call(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": id}),
    )
    .await;
    assert!(err_message(&r).contains("no such plan"));
    assert!(
        !sb.state.join(format!("plans/{id}.tfplan")).exists(),
        "applied plans are removed"
    );
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn expired_plans_are_refused() {
    let sb = Sandbox::new(&["basic"]);
    let session = connect(&sb.env(
        &terraform(),
        &[
            ("TERRARIUM_ENABLE_APPLY", "true"),
            ("TERRARIUM_PLAN_TTL_SECS", "1"),
        ],
    ))
    .await;
    call_ok(&session, "terraform_init", json!({"path": "basic"})).await;
    let plan = call_ok(&session, "terraform_plan", json!({"path": "basic"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let r = call(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": plan["plan_id"]}),
    )
    .await;
    assert!(err_message(&r).contains("expired"));
    assert!(!sb.root.join("basic/terraform.tfstate").exists());
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn deleting_plans_need_the_destroy_switch() {
    let sb = Sandbox::new(&["replace"]);
    let apply_only = sb.env(&terraform(), &[("TERRARIUM_ENABLE_APPLY", "true")]);
    let session = connect(&apply_only).await;
    call_ok(&session, "terraform_init", json!({"path": "replace"})).await;
    let plan = call_ok(&session, "terraform_plan", json!({"path": "replace"})).await;
    assert_eq!(plan["summary"]["counts"]["add"], 2);
    call_ok(
        &session,
        "terraform_apply",
        json!({"path": "replace", "plan_id": plan["plan_id"]}),
    )
    .await;

    // An in-place update is allowed.
    let plan = call_ok(
        &session,
        "terraform_plan",
        json!({"path": "replace", "vars": {"label": "b"}}),
    )
    .await;
    assert_eq!(
        plan["summary"]["counts"],
        json!({"add": 0, "change": 1, "destroy": 0, "replace": 0})
    );
    call_ok(
        &session,
        "terraform_apply",
        json!({"path": "replace", "plan_id": plan["plan_id"]}),
    )
    .await;

    // A replacement (delete + create) is refused.
    let replace = call_ok(
        &session,
        "terraform_plan",
        json!({"path": "replace", "vars": {"revision": "2", "label": "b"}}),
    )
    .await;
    assert_eq!(replace["summary"]["counts"]["replace"], 1);
    assert_eq!(replace["summary"]["deletes"], true);
    let r = call(
        &session,
        "terraform_apply",
        json!({"path": "replace", "plan_id": replace["plan_id"]}),
    )
    .await;
    let m = err_message(&r);
    assert!(
        m.contains("TERRARIUM_ENABLE_DESTROY=true") && m.contains("replaced"),
        "{m}"
    );

    // A destroy plan is refused.
    let destroy = call_ok(
        &session,
        "terraform_plan",
        json!({"path": "replace", "destroy": true}),
    )
    .await;
    assert_eq!(destroy["summary"]["counts"]["destroy"], 2);
    let r = call(
        &session,
        "terraform_apply",
        json!({"path": "replace", "plan_id": destroy["plan_id"]}),
    )
    .await;
    assert!(err_message(&r).contains("TERRARIUM_ENABLE_DESTROY=true"));
    let st = call_ok(&session, "terraform_show", json!({"path": "replace"})).await;
    assert_eq!(st["state"]["resource_count"], 2, "nothing was deleted");
    session.cancel().await.unwrap();

    // With the switch, the same (still unused) plans apply.
    let both = sb.env(
        &terraform(),
        &[
            ("TERRARIUM_ENABLE_APPLY", "true"),
            ("TERRARIUM_ENABLE_DESTROY", "true"),
        ],
    );
    let session = connect(&both).await;
    let r = call_ok(
        &session,
        "terraform_apply",
        json!({"path": "replace", "plan_id": replace["plan_id"]}),
    )
    .await;
    assert_eq!(
        r["resources_affected"],
        json!({"add": 1, "change": 0, "destroy": 1})
    );
    // The destroy plan is stale now (state changed): terraform itself refuses it.
    let r = call(
        &session,
        "terraform_apply",
        json!({"path": "replace", "plan_id": destroy["plan_id"]}),
    )
    .await;
    assert!(is_error(&r));
    let destroy = call_ok(
        &session,
        "terraform_plan",
        json!({"path": "replace", "destroy": true}),
    )
    .await;
    let r = call_ok(
        &session,
        "terraform_apply",
        json!({"path": "replace", "plan_id": destroy["plan_id"]}),
    )
    .await;
    assert_eq!(r["resources_affected"]["destroy"], 2);
    let st = call_ok(&session, "terraform_show", json!({"path": "replace"})).await;
    assert_eq!(st["state"]["resource_count"], 0);
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn a_policy_file_narrows_tools_and_protects_resources() {
    let sb = Sandbox::new(&["replace"]);
    let policy = sb.dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        r#"
[tools]
allow = ["terraform_init", "terraform_plan", "terraform_apply", "terraform_show"]

[apply]
protected = ["terraform_data.serv*"]
"#,
    )
    .unwrap();
    let env = sb.env(
        &terraform(),
        &[
            ("TERRARIUM_ENABLE_APPLY", "true"),
            ("TERRARIUM_ENABLE_DESTROY", "true"),
            ("TERRARIUM_POLICY_FILE", policy.to_str().unwrap()),
        ],
    );
    let session = connect(&env).await;
    let names: Vec<String> = session
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "terraform_init",
            "terraform_plan",
            "terraform_show",
            "terraform_apply"
        ]
    );
    let r = call(
        &session,
        "terraform_fmt",
        json!({"path": "replace", "write": true}),
    )
    .await;
    assert!(err_message(&r).contains("not allowed by this server's policy"));

    call_ok(&session, "terraform_init", json!({"path": "replace"})).await;
    let plan = call_ok(&session, "terraform_plan", json!({"path": "replace"})).await;
    call_ok(
        &session,
        "terraform_apply",
        json!({"path": "replace", "plan_id": plan["plan_id"]}),
    )
    .await;
    let replace = call_ok(
        &session,
        "terraform_plan",
        json!({"path": "replace", "vars": {"revision": "9"}}),
    )
    .await;
    let r = call(
        &session,
        "terraform_apply",
        json!({"path": "replace", "plan_id": replace["plan_id"]}),
    )
    .await;
    let m = err_message(&r);
    assert!(
        m.contains("protected resource terraform_data.server"),
        "{m}"
    );
    session.cancel().await.unwrap();
}
