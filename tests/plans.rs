//! Saved plans and the apply policy, against real Terraform and real `terraform_data` resources.

use crate::common::*;
use serde_json::json;

fn err_message(r: &rmcp::model::CallToolResult) -> String {
    assert!(is_error(r), "expected an error: {}", text(r));
    sc(r)["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn apply_is_disabled_by_default() {
    let (sb, session) = Setup::new(&["basic"]).stdio().await;
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
    let (sb, session) = Setup::new(&["basic", "outputs_only"])
        .envs(&[("TERRARIUM_ENABLE_APPLY", "true")])
        .stdio()
        .await;
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

    deploy(&session, "replace").await;
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

const DB_PASSWORD: &str = "Hunter2-Db-Pw-0987654321";
const CONN: &str = "Conn-String-7a6b5c4d3e2f";
const API_TOKEN: &str = "Api-Token-1q2w3e4r5t6y";

/// Everything a caller or the audit trail saw, to search for secrets.
struct Seen(Vec<(String, String)>);

impl Seen {
    fn result(&mut self, what: &str, r: &rmcp::model::CallToolResult) {
        self.0
            .push((what.into(), serde_json::to_string(r).expect("result JSON")));
    }

    fn progress(&mut self, what: &str, session: &Session) {
        let messages: Vec<String> = session
            .service()
            .progress
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| p.message.clone())
            .collect();
        self.0.push((what.into(), messages.join("\n")));
    }

    /// Asserts no secret appears in anything seen, as written or in another letter case.
    fn assert_clean(&self, secrets: &[&str]) {
        for (what, text) in &self.0 {
            let lower = text.to_lowercase();
            for s in secrets {
                assert!(
                    !lower.contains(&s.to_lowercase()),
                    "{s} leaked in {what}: {text}"
                );
            }
        }
    }
}

/// Issue 11, item 7: a secret-named or sensitive variable's value, given through `vars` or a var
/// file, stays masked in every later call that shows what carries it — the saved plan, the
/// apply, the outputs, the state (a terraform_data's `output`) — also after a restart.
#[tokio::test]
async fn secrets_stay_masked_in_later_calls_and_after_a_restart() {
    let sb = Sandbox::new(&["secret_data"]);
    let ws = sb.root.join("secret_data");
    std::fs::write(
        ws.join("conn.tfvars"),
        format!("# the connection string\nconn = \"{CONN}\"\n"),
    )
    .unwrap();
    std::fs::write(
        ws.join("token.tfvars.json"),
        json!({ "api_token": API_TOKEN }).to_string(),
    )
    .unwrap();
    let env = sb.env(&terraform(), &[("TERRARIUM_ENABLE_APPLY", "true")]);
    let mut seen = Seen(Vec::new());
    let secrets = [DB_PASSWORD, CONN, API_TOKEN];

    let session = connect(&env).await;
    call_ok(&session, "terraform_init", json!({"path": "secret_data"})).await;
    let plan = call(
        &session,
        "terraform_plan",
        json!({"path": "secret_data", "vars": {"db_password": DB_PASSWORD},
               "var_files": ["conn.tfvars", "token.tfvars.json"]}),
    )
    .await;
    let id = ok(&plan)["plan_id"].as_str().unwrap().to_string();
    seen.result("plan", &plan);

    // Each in a call of its own: the plan's secrets are not in these calls' arguments.
    let shown = call(
        &session,
        "terraform_show",
        json!({"path": "secret_data", "plan_id": id}),
    )
    .await;
    let shown_text = serde_json::to_string(ok(&shown)).unwrap();
    assert!(
        shown_text.contains("terraform_data.db") && shown_text.contains("[REDACTED]"),
        "the plan's rendering shows the values, masked: {shown_text}"
    );
    seen.result("show of the plan", &shown);
    let applied = call(
        &session,
        "terraform_apply",
        json!({"path": "secret_data", "plan_id": id}),
    )
    .await;
    assert_eq!(ok(&applied)["resources_affected"]["add"], 3);
    seen.result("apply", &applied);
    let outputs = call(&session, "terraform_output", json!({"path": "secret_data"})).await;
    for name in ["db", "conn", "token"] {
        assert_eq!(
            ok(&outputs)["outputs"][name]["value"],
            "[REDACTED]",
            "output {name}"
        );
    }
    seen.result("output", &outputs);
    let state = call(&session, "terraform_show", json!({"path": "secret_data"})).await;
    let resources = ok(&state)["state"]["resources"].as_array().unwrap().clone();
    assert_eq!(resources.len(), 3);
    for r in &resources {
        assert_eq!(r["values"]["output"], "[REDACTED]", "{r}");
    }
    seen.result("show of state", &state);
    seen.progress("progress", &session);
    session.cancel().await.unwrap();

    // A new server knows the workspace's secrets from its state dir.
    let session = connect(&env).await;
    let outputs = call(&session, "terraform_output", json!({"path": "secret_data"})).await;
    assert_eq!(ok(&outputs)["outputs"]["db"]["value"], "[REDACTED]");
    seen.result("output after a restart", &outputs);
    let one = call(
        &session,
        "terraform_output",
        json!({"path": "secret_data", "name": "token"}),
    )
    .await;
    assert_eq!(ok(&one)["outputs"]["token"]["value"], "[REDACTED]");
    seen.result("one output after a restart", &one);
    let state = call(&session, "terraform_show", json!({"path": "secret_data"})).await;
    ok(&state);
    seen.result("show of state after a restart", &state);
    seen.progress("progress after a restart", &session);
    session.cancel().await.unwrap();

    seen.0.push(("audit".into(), sb.audit_text()));
    seen.assert_clean(&secrets);
    // Nothing but the server's private state dir holds them (terraform's own files aside).
    let store = sb.state.join("secrets");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&store).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
}

/// A copy of the real Terraform (as `terraform-real`) behind a stand-in script, outside the root.
fn wrapped_terraform(sb: &Sandbox, script: &str) -> std::path::PathBuf {
    let dir = sb.dir.path().join(format!("wrapped-{script}"));
    copy_dir(terraform().parent().unwrap(), &dir);
    std::fs::rename(dir.join("terraform"), dir.join("terraform-real")).unwrap();
    std::fs::copy(standin(script), dir.join("terraform")).unwrap();
    dir.join("terraform")
}

fn counting_terraform(sb: &Sandbox) -> std::path::PathBuf {
    wrapped_terraform(sb, "count_runs.sh")
}

#[tokio::test]
async fn a_plan_file_replaced_during_the_plan_is_never_applied() {
    let sb = Sandbox::new(&["basic"]);
    let apply = [("TERRARIUM_ENABLE_APPLY", "true")];
    // First a real deployment, so that a destroy plan has something to delete.
    let session = connect(&sb.env(&terraform(), &apply)).await;
    deploy(&session, "basic").await;
    session.cancel().await.unwrap();
    std::fs::write(
        sb.root.join("basic/extra.tf"),
        "resource \"terraform_data\" \"more\" {\n  input = 1\n}\n",
    )
    .unwrap();

    // Workspace code swaps the plan file for a destroy plan after terraform wrote its stream.
    let session = connect(&sb.env(&wrapped_terraform(&sb, "swap_destroy.sh"), &apply)).await;
    let plan = call_ok(&session, "terraform_plan", json!({"path": "basic"})).await;
    assert_eq!(plan["summary"]["counts"]["add"], 1, "the stream's summary");
    assert_eq!(plan["summary"]["counts"]["destroy"], 0);
    let r = call(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": plan["plan_id"]}),
    )
    .await;
    let m = err_message(&r);
    assert!(m.contains("does not do what its summary says"), "{m}");
    let state = std::fs::read_to_string(sb.root.join("basic/terraform.tfstate")).unwrap();
    assert!(state.contains("greeting"), "nothing was destroyed");
    // Shown, the plan tells what its bytes do, not what the stream said.
    let plan = call_ok(&session, "terraform_plan", json!({"path": "basic"})).await;
    let shown = call_ok(
        &session,
        "terraform_show",
        json!({"path": "basic", "plan_id": plan["plan_id"]}),
    )
    .await;
    assert_eq!(shown["summary"]["counts"]["destroy"], 1, "{shown}");
    session.cancel().await.unwrap();
}

/// The subcommands terraform was started with in `ws` since the last look.
fn runs_since(sb: &Sandbox, ws: &str) -> Vec<String> {
    let log = sb.root.join(ws).join(".terraform-runs.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    text.lines().map(String::from).collect()
}

#[tokio::test]
async fn a_plan_is_one_terraform_process_and_its_full_json_is_made_once() {
    let sb = Sandbox::new(&["basic"]);
    let tf = counting_terraform(&sb);
    let session = connect(&sb.env(&tf, &[("TERRARIUM_ENABLE_APPLY", "true")])).await;
    call_ok(&session, "terraform_init", json!({"path": "basic"})).await;
    assert_eq!(runs_since(&sb, "basic"), ["init"]);

    let plan = call_ok(&session, "terraform_plan", json!({"path": "basic"})).await;
    assert_eq!(runs_since(&sb, "basic"), ["plan"], "one process per plan");
    assert_eq!(plan["summary"]["counts"]["add"], 1);
    assert_eq!(
        plan["summary"]["resource_changes"][0]["address"],
        "terraform_data.greeting"
    );
    let id = plan["plan_id"].as_str().unwrap().to_string();

    // The full plan: made by the first show, read from beside the plan after that.
    let shown = call_ok(
        &session,
        "terraform_show",
        json!({"path": "basic", "plan_id": id}),
    )
    .await;
    assert_eq!(runs_since(&sb, "basic"), ["show"]);
    // The run is reported like any other; its stdout (the raw JSON plan) is not.
    assert_eq!(shown["exit_code"], 0);
    assert_eq!(shown["stdout"], "");
    assert!(shown["sandbox"].is_object(), "{shown}");
    assert_eq!(
        shown["plan"]["output_changes"]["greeting"]["after"],
        "(known after apply)"
    );
    assert_eq!(
        shown["plan"]["output_changes"]["password"]["after"],
        "(sensitive value)"
    );
    assert_eq!(
        shown["plan"]["resource_changes"][0]["after"]["input"],
        "hello world"
    );
    let again = call_ok(
        &session,
        "terraform_show",
        json!({"path": "basic", "plan_id": id}),
    )
    .await;
    assert_eq!(runs_since(&sb, "basic"), Vec::<String>::new(), "cached");
    assert_eq!(again["plan"], shown["plan"]);

    // Applying a shown plan needs no second look at it.
    call_ok(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": id}),
    )
    .await;
    assert_eq!(runs_since(&sb, "basic"), ["apply"]);

    // A plan applied without being shown: its full JSON is made once, before the apply.
    std::fs::write(
        sb.root.join("basic/extra.tf"),
        "resource \"terraform_data\" \"more\" {\n  input = 1\n}\n",
    )
    .unwrap();
    let plan = call_ok(&session, "terraform_plan", json!({"path": "basic"})).await;
    assert_eq!(runs_since(&sb, "basic"), ["plan"]);
    call_ok(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": plan["plan_id"]}),
    )
    .await;
    assert_eq!(runs_since(&sb, "basic"), ["show", "apply"]);
    session.cancel().await.unwrap();
}
