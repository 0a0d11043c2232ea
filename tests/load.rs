//! A bounded load test: 200 concurrent MCP sessions over HTTP making cheap calls for a few
//! seconds, with zero errors and the server's memory bounded.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

const TOKEN: &str = "load-token-0123456789abcdef0123456789ab";

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_sessions_make_cheap_calls_without_errors() {
    let sb = Sandbox::new(&["basic"]);
    let tokens = format!("load:{TOKEN}");
    let env = sb.env(
        &terraform(),
        &[
            ("TERRARIUM_AUTH_TOKENS", tokens.as_str()),
            // One client address for every session: the limits are raised for this test.
            ("TERRARIUM_RATE_LIMIT_PER_SEC", "100000"),
            ("TERRARIUM_RATE_LIMIT_BURST", "100000"),
            // One principal for every session, too.
            ("TERRARIUM_HTTP_MAX_SESSIONS_PER_PRINCIPAL", "256"),
        ],
    );
    let server = HttpServer::start(&env, &[]);
    let url = server.url("/mcp");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(4);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let session = connect_http(&url, TOKEN).await;
            let mut calls = 0u32;
            let mut errors = 0u32;
            while Instant::now() < deadline || calls == 0 {
                let r = call(&session, "workspace_list", json!({})).await;
                calls += 1;
                if is_error(&r) {
                    errors += 1;
                }
            }
            session.cancel().await.unwrap();
            (calls, errors)
        }));
    }
    let mut calls = 0;
    let mut errors = 0;
    for t in tasks {
        let (c, e) = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("bounded")
            .unwrap();
        calls += c;
        errors += e;
    }
    let elapsed = started.elapsed();
    let rss_mb = vm_hwm_kb(server.child.id()) / 1024;
    eprintln!("{calls} calls in {elapsed:?} over 200 sessions; server peak RSS {rss_mb} MB");
    assert_eq!(errors, 0);
    assert!(calls >= 200);
    assert!(rss_mb < 256, "server peak RSS {rss_mb} MB");
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "terrarium_tool_calls_total{{tool=\"workspace_list\",outcome=\"ok\"}} {calls}"
        )),
        "{metrics}"
    );
}
