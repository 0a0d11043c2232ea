//! Rerunnable HTTP benchmark (run with `scripts/bench`): requests per second and p50/p99
//! latency of a cheap tool call (`workspace_list` over MCP) and of a rejected call (401), each
//! next to a bare axum "hello" handler measured in the same run with the same load generator,
//! and the server's peak RSS under that load.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use tokio::io::AsyncBufReadExt;

const TOKEN: &str = "bench-token-0123456789abcdef0123456789";
const WORKERS: usize = 32;

struct Stats {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

fn stats(mut lat: Vec<Duration>, elapsed: Duration) -> Stats {
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    Stats {
        rps: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Runs `op` from WORKERS concurrent workers for `secs` and collects per-request latencies.
async fn load<F, Fut>(secs: u64, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                op(w).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    stats(all, start.elapsed())
}

fn vm_hwm_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::main]
async fn main() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var("TERRARIUM_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join("target/release/terrarium"));
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("root/hello")).unwrap();
    std::fs::write(tmp.path().join("root/hello/main.tf"), "").unwrap();

    // The baseline: a bare axum handler in this process.
    let hello = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hello_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, hello).await });

    let mut child = tokio::process::Command::new(&bin)
        .args(["serve", "--http", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TERRARIUM_WORKSPACE_ROOT", tmp.path().join("root"))
        .env("TERRARIUM_STATE_DIR", tmp.path().join("state"))
        .env("TERRARIUM_TERRAFORM_BIN", "/bin/true")
        .env("TERRARIUM_AUTH_TOKENS", format!("bench:{TOKEN}"))
        .env("TERRARIUM_RATE_LIMIT_PER_SEC", "10000000")
        .env("TERRARIUM_RATE_LIMIT_BURST", "10000000")
        .env("TERRARIUM_HTTP_MAX_SESSIONS_PER_PRINCIPAL", "256")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start terrarium (build it with cargo build --release)");
    let pid = child.id().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next_line().await.unwrap().expect("server exited");
        if let Some(rest) = line.strip_prefix("terrarium: serving MCP at http://") {
            break rest.trim_end_matches("/mcp").to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let http = reqwest::Client::new();
    let h = http.clone();
    let url = format!("http://{hello_addr}/hello");
    let base = load(secs, move |_| {
        let (h, url) = (h.clone(), url.clone());
        async move {
            let r = h.get(&url).send().await.unwrap();
            assert!(r.status().is_success());
            let _ = r.bytes().await;
        }
    })
    .await;

    let h = http.clone();
    let url = format!("http://{addr}/mcp");
    let rejected = load(secs, move |_| {
        let (h, url) = (h.clone(), url.clone());
        async move {
            let r = h
                .post(&url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
            let _ = r.bytes().await;
        }
    })
    .await;

    let mut sessions = Vec::new();
    for _ in 0..WORKERS {
        let t = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp"))
                .auth_header(TOKEN),
        );
        sessions.push(().serve(t).await.unwrap());
    }
    let sessions = Arc::new(sessions);
    let s2 = sessions.clone();
    let cheap = load(secs, move |w| {
        let s = s2.clone();
        async move {
            let r = s[w]
                .call_tool(CallToolRequestParams::new("workspace_list"))
                .await
                .unwrap();
            assert_ne!(r.is_error, Some(true));
        }
    })
    .await;
    let rss = vm_hwm_mb(pid);
    let _ = child.kill().await;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("terrarium HTTP benchmark ({WORKERS} concurrent clients, {secs}s per measure)");
    println!("| measure | req/s | p50 | p99 | req/s vs hello | p99 vs hello |");
    println!("|---|---|---|---|---|---|");
    for (name, s) in [
        ("bare axum hello (baseline)", &base),
        ("rejected call (401, no token)", &rejected),
        ("cheap tool call (workspace_list over MCP)", &cheap),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.3} | {:.1} |",
            s.rps,
            ms(s.p50),
            ms(s.p99),
            s.rps / base.rps,
            s.p99.as_secs_f64() / base.p99.as_secs_f64()
        );
    }
    println!("| server peak RSS under this load | {rss:.1} MB | | | | |");
}
