//! Rerunnable benchmark of what Terrarium adds on top of terraform (run with `scripts/bench`).
//!
//! In one run, on the same machine and workspace:
//! - overhead: median wall time of `terraform_validate` and `terraform_plan` through the server
//!   (MCP over stdio, rmcp client) divided by the median of terraform run directly, interleaved
//!   so that machine noise hits both alike: `terraform plan -out` (what a person runs; its
//!   human rendering is work the server skips), and the pair the tool ran before it read the
//!   plan's own stream (`plan -json -out` + `show -json`); a small plan and one of 1,000
//!   resources;
//! - cold start: spawn of `terrarium serve` to the `initialize` response, next to the spawn and
//!   exit of `/bin/true` as the baseline;
//! - memory: peak RSS (VmHWM) of the idle server after `initialize` and `tools/list`, next to
//!   that of `/bin/sleep` as the baseline; and the server's RSS after `BENCH_MEMORY_PLANS`
//!   (default 100) plans of 1,000 resources next to its RSS after the first one, each half a
//!   second after the call (growth means something is kept or fragmented per plan).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn direct(terraform: &Path, cwd: &Path, home: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let status = Command::new(terraform)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("TF_IN_AUTOMATION", "1")
        .env("TF_INPUT", "0")
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_CLI_CONFIG_FILE", home.join("terraform.rc"))
        .env("TF_PLUGIN_CACHE_DIR", home.join("plugin-cache"))
        .env("LANG", "C.UTF-8")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run terraform")
        .status;
    assert!(status.success(), "direct terraform {args:?} failed");
    start.elapsed()
}

fn vm_hwm_kb(pid: u32) -> u64 {
    status_kb(pid, "VmHWM:")
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var("TERRARIUM_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join("target/release/terrarium"));
    let terraform = std::env::var("TERRARIUM_TERRAFORM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join(".tools/terraform/1.15.5/terraform"));
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    copy_dir(&manifest.join("examples/workspaces"), &root);
    let ws = root.join("hello");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(home.join("plugin-cache")).unwrap();
    // The same CLI configuration the server writes for its runs.
    std::fs::write(
        home.join("terraform.rc"),
        format!(
            "plugin_cache_dir = \"{}\"\ndisable_checkpoint = true\n",
            home.join("plugin-cache").display()
        ),
    )
    .unwrap();
    direct(
        &terraform,
        &ws,
        &home,
        &["init", "-input=false", "-no-color"],
    );
    let planfile = tmp.path().join("direct.tfplan");
    let planfile_arg = format!("-out={}", planfile.display());
    // A workspace of 1,000 resources: the summary of a large plan.
    let big = root.join("big");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::write(
        big.join("main.tf"),
        "resource \"terraform_data\" \"r\" {\n  count = 1000\n  input = count.index\n}\n",
    )
    .unwrap();
    direct(
        &terraform,
        &big,
        &home,
        &["init", "-input=false", "-no-color"],
    );

    let server = |sandbox: &str| {
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.arg("serve")
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("TERRARIUM_WORKSPACE_ROOT", &root)
            .env(
                "TERRARIUM_STATE_DIR",
                tmp.path().join(format!("state-{sandbox}")),
            )
            .env(
                "TERRARIUM_AUDIT_DIR",
                tmp.path().join(format!("audit-{sandbox}")),
            )
            .env("TERRARIUM_TERRAFORM_BIN", &terraform)
            .env("TERRARIUM_SANDBOX", sandbox);
        cmd
    };
    // The default (strict: every kernel layer) and the same server with the sandbox off.
    let client = ().serve(TokioChildProcess::new(server("strict")).unwrap()).await.unwrap();
    let client_off = ().serve(TokioChildProcess::new(server("off")).unwrap()).await.unwrap();
    let call_on = |which: &'static str, tool: &'static str, args: Value| {
        let client = if which == "off" { &client_off } else { &client };
        async move {
            let Value::Object(map) = args else {
                unreachable!()
            };
            let start = Instant::now();
            let r = client
                .call_tool(CallToolRequestParams::new(tool).with_arguments(map))
                .await
                .unwrap();
            assert_ne!(r.is_error, Some(true), "{tool} failed: {:?}", r.content);
            start.elapsed()
        }
    };

    let call = |tool: &'static str, args: Value| call_on("strict", tool, args);
    let (mut v_srv, mut v_dir, mut p_srv, mut p_dir, mut noop) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut v_off, mut p_off, mut p_plain) = (vec![], vec![], vec![]);
    let (mut big_srv, mut big_plain) = (vec![], vec![]);
    // Warm-up: page cache, plugin cache, first-run costs on both sides.
    call("terraform_validate", json!({"path": "hello"})).await;
    call_on("off", "terraform_validate", json!({"path": "hello"})).await;
    direct(&terraform, &ws, &home, &["validate", "-json", "-no-color"]);
    for _ in 0..iterations {
        noop.push(call("workspace_list", json!({})).await);
        v_srv.push(call("terraform_validate", json!({"path": "hello"})).await);
        v_dir.push(direct(
            &terraform,
            &ws,
            &home,
            &["validate", "-json", "-no-color"],
        ));
        p_srv.push(call("terraform_plan", json!({"path": "hello"})).await);
        v_off.push(call_on("off", "terraform_validate", json!({"path": "hello"})).await);
        p_off.push(call_on("off", "terraform_plan", json!({"path": "hello"})).await);
        // The tool's work: a saved JSON plan, then its JSON rendering for the summary.
        let a = direct(
            &terraform,
            &ws,
            &home,
            &["plan", "-input=false", "-no-color", "-json", &planfile_arg],
        );
        let b = direct(
            &terraform,
            &ws,
            &home,
            &["show", "-json", "-no-color", planfile.to_str().unwrap()],
        );
        p_dir.push(a + b);
        p_plain.push(direct(
            &terraform,
            &ws,
            &home,
            &["plan", "-input=false", "-no-color", &planfile_arg],
        ));
    }
    // The large plan takes seconds: a third of the iterations (at least 5).
    for _ in 0..(iterations / 3).max(5) {
        big_srv.push(call("terraform_plan", json!({"path": "big"})).await);
        big_plain.push(direct(
            &terraform,
            &big,
            &home,
            &["plan", "-input=false", "-no-color", &planfile_arg],
        ));
    }
    client.cancel().await.unwrap();
    client_off.cancel().await.unwrap();

    // Memory over many large plans, in a fresh server.
    let memory_plans: usize = std::env::var("BENCH_MEMORY_PLANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .max(2);
    let transport = TokioChildProcess::new(server("strict")).unwrap();
    let mem_pid = transport.id().unwrap();
    let mem_client = ().serve(transport).await.unwrap();
    let mut rss_after_first = 0;
    for i in 0..memory_plans {
        let Value::Object(map) = json!({"path": "big"}) else {
            unreachable!()
        };
        let r = mem_client
            .call_tool(CallToolRequestParams::new("terraform_plan").with_arguments(map))
            .await
            .unwrap();
        assert_ne!(r.is_error, Some(true), "big plan failed: {:?}", r.content);
        if i == 0 {
            // After the server's idle trim (see `memory.rs`), as at the end.
            tokio::time::sleep(Duration::from_millis(500)).await;
            rss_after_first = status_kb(mem_pid, "VmRSS:");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after_all = status_kb(mem_pid, "VmRSS:");
    mem_client.cancel().await.unwrap();

    let mut cold = vec![];
    let mut true_spawn = vec![];
    let mut rss_kb = 0;
    for i in 0..iterations.min(20) {
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.arg("serve")
            .env_clear()
            .env("TERRARIUM_WORKSPACE_ROOT", &root)
            .env("TERRARIUM_STATE_DIR", tmp.path().join("state"))
            .env("TERRARIUM_AUDIT_DIR", tmp.path().join("audit-cold"))
            .env("TERRARIUM_TERRAFORM_BIN", &terraform);
        let start = Instant::now();
        let transport = TokioChildProcess::new(cmd).unwrap();
        let pid = transport.id().unwrap();
        let client = ().serve(transport).await.unwrap();
        cold.push(start.elapsed());
        if i == 0 {
            client.list_all_tools().await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            rss_kb = vm_hwm_kb(pid);
        }
        client.cancel().await.unwrap();
        let start = Instant::now();
        Command::new("/bin/true").status().unwrap();
        true_spawn.push(start.elapsed());
    }
    let mut sleeper = Command::new("/bin/sleep").arg("5").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let sleep_kb = vm_hwm_kb(sleeper.id());
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    let (vs, vd, ps, pd) = (median(v_srv), median(v_dir), median(p_srv), median(p_dir));
    let (c, t) = (median(cold), median(true_spawn));
    let n = median(noop);
    let (vo, po) = (median(v_off), median(p_off));
    let pp = median(p_plain);
    let (bs, bp) = (median(big_srv), median(big_plain));
    println!(
        "terrarium benchmark ({iterations} iterations, medians; terraform {})",
        terraform.display()
    );
    println!("| measure | through terrarium | baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| terraform_validate vs `terraform validate -json` | {:.1} ms | {:.1} ms | {:.3} |",
        ms(vs),
        ms(vd),
        vs.as_secs_f64() / vd.as_secs_f64()
    );
    println!(
        "| terraform_plan vs `terraform plan -out` | {:.1} ms | {:.1} ms | {:.3} |",
        ms(ps),
        ms(pp),
        ps.as_secs_f64() / pp.as_secs_f64()
    );
    println!(
        "| terraform_plan vs `terraform plan -json -out` + `show -json` | {:.1} ms | {:.1} ms | {:.3} |",
        ms(ps),
        ms(pd),
        ps.as_secs_f64() / pd.as_secs_f64()
    );
    println!(
        "| 1,000-resource terraform_plan vs `terraform plan -out` | {:.1} ms | {:.1} ms | {:.3} |",
        ms(bs),
        ms(bp),
        bs.as_secs_f64() / bp.as_secs_f64()
    );
    println!(
        "| terraform_validate, sandbox strict vs off | {:.1} ms | {:.1} ms | {:.3} |",
        ms(vs),
        ms(vo),
        vs.as_secs_f64() / vo.as_secs_f64()
    );
    println!(
        "| terraform_plan, sandbox strict vs off | {:.1} ms | {:.1} ms | {:.3} |",
        ms(ps),
        ms(po),
        ps.as_secs_f64() / po.as_secs_f64()
    );
    println!(
        "| round trip of a call that spawns nothing (`workspace_list`) vs `terraform validate` | {:.2} ms | {:.1} ms | {:.3} |",
        ms(n),
        ms(vd),
        n.as_secs_f64() / vd.as_secs_f64()
    );
    println!(
        "| cold start to `initialize` response vs spawn of /bin/true | {:.1} ms | {:.1} ms | {:.1} |",
        ms(c),
        ms(t),
        c.as_secs_f64() / t.as_secs_f64()
    );
    println!(
        "| peak RSS of the idle server vs /bin/sleep | {:.1} MB | {:.1} MB | {:.1} |",
        rss_kb as f64 / 1024.0,
        sleep_kb as f64 / 1024.0,
        rss_kb as f64 / sleep_kb.max(1) as f64
    );
    println!(
        "| server RSS after {memory_plans} 1,000-resource plans vs after the first | {:.1} MB | {:.1} MB | {:+.1} MB |",
        rss_after_all as f64 / 1024.0,
        rss_after_first as f64 / 1024.0,
        (rss_after_all as f64 - rss_after_first as f64) / 1024.0
    );
}
