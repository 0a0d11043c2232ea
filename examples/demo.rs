//! A scripted MCP session against the bundled example workspaces: what an AI assistant does
//! through Terrarium, printed as it happens. Run it with `scripts/demo`.
//!
//! It copies `examples/workspaces` to a temporary root, starts `terrarium serve` over stdio
//! (apply enabled, destroy not), and walks list → init → validate → plan → apply → output, then
//! shows a replacing plan being refused and a traversal attempt being rejected.

use std::path::{Path, PathBuf};

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

type Session = RunningService<rmcp::RoleClient, ()>;

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

async fn step(session: &Session, tool: &str, args: Value) -> anyhow::Result<Value> {
    println!("\n━━ {tool} {args}");
    let Value::Object(map) = args else {
        anyhow::bail!("arguments must be an object")
    };
    let r: CallToolResult = session
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map))
        .await?;
    for c in &r.content {
        if let Some(t) = c.as_text() {
            for line in t.text.lines().take(25) {
                println!("   {line}");
            }
        }
    }
    if r.is_error == Some(true) {
        println!("   ↳ refused/failed (is_error = true)");
    }
    Ok(r.structured_content.unwrap_or(Value::Null))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var("TERRARIUM_DEMO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join("target/debug/terrarium"));
    let terraform = std::env::var("TERRARIUM_TERRAFORM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join(".tools/terraform/default/terraform"));
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("workspaces");
    copy_dir(&manifest.join("examples/workspaces"), &root)?;

    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERRARIUM_WORKSPACE_ROOT", &root)
        .env("TERRARIUM_STATE_DIR", tmp.path().join("state"))
        .env("TERRARIUM_AUDIT_DIR", tmp.path().join("audit"))
        .env("TERRARIUM_TERRAFORM_BIN", &terraform)
        .env("TERRARIUM_ENABLE_APPLY", "true");
    let session: Session = ().serve(TokioChildProcess::new(cmd)?).await?;
    let name = session
        .peer_info()
        .and_then(|i| i.server_info.clone())
        .map(|i| i.name)
        .unwrap_or_default();
    println!(
        "connected to {:?} over stdio; workspace root {}",
        name,
        root.display()
    );

    step(&session, "workspace_list", json!({})).await?;
    step(&session, "terraform_version", json!({})).await?;
    for ws in ["hello", "app"] {
        step(&session, "terraform_init", json!({"path": ws})).await?;
        step(&session, "terraform_validate", json!({"path": ws})).await?;
    }
    let plan = step(
        &session,
        "terraform_plan",
        json!({"path": "hello", "vars": {"name": "Terrarium"}}),
    )
    .await?;
    step(
        &session,
        "terraform_apply",
        json!({"path": "hello", "plan_id": plan["plan_id"]}),
    )
    .await?;
    step(&session, "terraform_output", json!({"path": "hello"})).await?;

    let plan = step(&session, "terraform_plan", json!({"path": "app"})).await?;
    step(
        &session,
        "terraform_apply",
        json!({"path": "app", "plan_id": plan["plan_id"]}),
    )
    .await?;
    let replace = step(
        &session,
        "terraform_plan",
        json!({"path": "app", "vars": {"release": "v2"}}),
    )
    .await?;
    step(
        &session,
        "terraform_apply",
        json!({"path": "app", "plan_id": replace["plan_id"]}),
    )
    .await?;
    step(&session, "terraform_plan", json!({"path": "../../etc"})).await?;
    step(
        &session,
        "terraform_plan",
        json!({"path": "hello", "targets": ["-destroy"]}),
    )
    .await?;

    session.cancel().await?;
    println!("\naudit trail ({}):", tmp.path().join("audit").display());
    let mut audit = String::new();
    for f in terrarium_core::audit::file::files(&tmp.path().join("audit")) {
        audit.push_str(&std::fs::read_to_string(f)?);
    }
    for line in audit.lines() {
        let e: Value = serde_json::from_str(line)?;
        println!(
            "   {} {:<20} {:<8} success={} {}",
            e["timestamp"].as_str().unwrap_or_default(),
            e["tool"]
                .as_str()
                .or(e["event"].as_str())
                .unwrap_or_default(),
            e["workspace"].as_str().unwrap_or("-"),
            e.get("success")
                .map_or_else(|| "-".to_string(), |v| v.to_string()),
            e["outcome"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}
