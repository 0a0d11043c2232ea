//! Shared harness: a temporary workspace root and state dir, the real `terrarium` binary over
//! stdio driven by rmcp's client, and the real Terraform installed by scripts/install-terraform.
#![allow(dead_code, unreachable_pub)]

// A test double answers with whole HTTP responses as its errors.
#[allow(clippy::result_large_err)]
pub mod github;
pub mod tarball;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, ProgressNotificationParam};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Map, Value, json};

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real Terraform 1.15.5 (or `TERRARIUM_TEST_TERRAFORM`).
pub fn terraform() -> PathBuf {
    if let Ok(p) = std::env::var("TERRARIUM_TEST_TERRAFORM") {
        return PathBuf::from(p);
    }
    let p = manifest_dir().join(".tools/terraform/1.15.5/terraform");
    assert!(
        p.exists(),
        "Terraform is not installed: run scripts/install-terraform (or scripts/test)"
    );
    p
}

/// Terraform 1.0.3, for the compatibility smoke run.
pub fn terraform_legacy() -> PathBuf {
    if let Ok(p) = std::env::var("TERRARIUM_TEST_TERRAFORM_LEGACY") {
        return PathBuf::from(p);
    }
    let p = manifest_dir().join(".tools/terraform/1.0.3/terraform");
    assert!(
        p.exists(),
        "Terraform 1.0.3 is not installed: run scripts/install-terraform"
    );
    p
}

pub fn standin(name: &str) -> PathBuf {
    manifest_dir().join("tests/fixtures/standin").join(name)
}

/// A temporary root with copies of fixtures, a state dir beside it, and an audit file.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub audit: PathBuf,
}

impl Sandbox {
    pub fn new(fixtures: &[&str]) -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&root).unwrap();
        for f in fixtures {
            copy_dir(
                &manifest_dir().join("tests/fixtures").join(f),
                &root.join(f),
            );
        }
        let audit = dir.path().join("audit");
        Sandbox {
            root,
            state,
            audit,
            dir,
        }
    }

    /// The environment for a server over this sandbox; `extra` adds or overrides.
    pub fn env(&self, terraform: &Path, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        );
        env.insert(
            "TERRARIUM_WORKSPACE_ROOT".into(),
            self.root.display().to_string(),
        );
        env.insert(
            "TERRARIUM_STATE_DIR".into(),
            self.state.display().to_string(),
        );
        env.insert(
            "TERRARIUM_TERRAFORM_BIN".into(),
            terraform.display().to_string(),
        );
        env.insert(
            "TERRARIUM_AUDIT_DIR".into(),
            self.audit.display().to_string(),
        );
        env.insert("TERRARIUM_TIMEOUT_SECS".into(), "120".into());
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        env
    }

    /// The audit files, oldest first.
    pub fn audit_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.audit)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    /// The whole audit trail as text.
    pub fn audit_text(&self) -> String {
        self.audit_files()
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect()
    }

    /// Every audit event (start-up, shutdown, tool calls, ...).
    pub fn all_audit_events(&self) -> Vec<Value> {
        self.audit_text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// Every line that parses as an event (a torn line is skipped).
    pub fn all_audit_events_lenient(&self) -> Vec<Value> {
        self.audit_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The events of tool calls only.
    pub fn audit_events(&self) -> Vec<Value> {
        self.all_audit_events()
            .into_iter()
            .filter(|e| e.get("tool").is_some())
            .collect()
    }
}

/// A test's set-up in one expression: a [`Sandbox`] with fixture copies, the server's
/// environment, and the real binary started over stdio or HTTP.
///
/// ```ignore
/// let (sb, session) = Setup::new(&["basic"]).env("TERRARIUM_ENABLE_APPLY", "true").stdio().await;
/// ```
pub struct Setup {
    sandbox: Sandbox,
    terraform: PathBuf,
    extra: Vec<(String, String)>,
}

impl Setup {
    /// Copies of these fixtures under a fresh root, the real Terraform 1.15.5.
    pub fn new(fixtures: &[&str]) -> Setup {
        Setup {
            sandbox: Sandbox::new(fixtures),
            terraform: terraform(),
            extra: Vec::new(),
        }
    }

    /// Another terraform (a stand-in, or 1.0.3).
    pub fn terraform(mut self, path: PathBuf) -> Setup {
        self.terraform = path;
        self
    }

    /// One more server variable (later ones win).
    pub fn env(mut self, name: &str, value: &str) -> Setup {
        self.extra.push((name.to_string(), value.to_string()));
        self
    }

    pub fn envs(mut self, pairs: &[(&str, &str)]) -> Setup {
        for (k, v) in pairs {
            self = self.env(k, v);
        }
        self
    }

    /// The sandbox and the environment, for a test that starts the server itself.
    pub fn build(self) -> (Sandbox, BTreeMap<String, String>) {
        let extra: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let env = self.sandbox.env(&self.terraform, &extra);
        (self.sandbox, env)
    }

    /// `terrarium serve` over stdio, initialized.
    pub async fn stdio(self) -> (Sandbox, Session) {
        let (sb, env) = self.build();
        let session = connect(&env).await;
        (sb, session)
    }

    /// `terrarium serve --http` on a free loopback port, with these extra arguments.
    pub fn http(self, args: &[&str]) -> (Sandbox, HttpServer) {
        let (sb, env) = self.build();
        let server = HttpServer::start(&env, args);
        (sb, server)
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// An MCP client that records progress notifications.
#[derive(Clone, Default)]
pub struct Client {
    pub progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for Client {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }
}

pub type Session = RunningService<RoleClient, Client>;

/// Starts `terrarium serve` with exactly `env` (nothing inherited) and connects to it.
pub async fn connect(env: &BTreeMap<String, String>) -> Session {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_terrarium"));
    cmd.arg("serve")
        .env_clear()
        .envs(env)
        .current_dir(std::env::temp_dir());
    let (transport, _stderr) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn terrarium");
    Client::default()
        .serve(transport)
        .await
        .expect("MCP initialize")
}

pub async fn call(session: &Session, tool: &str, args: Value) -> CallToolResult {
    let args: Map<String, Value> = match args {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    tokio::time::timeout(
        Duration::from_secs(300),
        session.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args)),
    )
    .await
    .expect("tool call timed out")
    .unwrap_or_else(|e| panic!("tool call {tool} failed at the protocol level: {e}"))
}

/// The structured content of a result.
pub fn sc(r: &CallToolResult) -> &Value {
    r.structured_content.as_ref().expect("structuredContent")
}

pub fn is_error(r: &CallToolResult) -> bool {
    r.is_error == Some(true)
}

/// The readable text block.
pub fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts a call succeeded, showing the whole result when it did not.
pub fn ok(r: &CallToolResult) -> &Value {
    assert!(!is_error(r), "tool call failed: {}", text(r));
    sc(r)
}

/// Whether a process is still alive (zombies count as gone).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

pub fn read_pid(path: &Path) -> i32 {
    for _ in 0..100 {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(pid) = s.trim().parse()
        {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no pid in {}", path.display());
}

/// Live processes on the host whose working directory is `dir` or below it. A run with the
/// namespaces layer has its own PID namespace and `/proc`, so the pids it records mean nothing
/// out here; where its processes work does (its workspace is mounted at the same path).
pub fn processes_in(dir: &Path) -> Vec<i32> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(&dir))
            && alive(pid)
        {
            found.push(pid);
        }
    }
    found
}

/// Waits up to `secs` until no process works in `dir` (see [`processes_in`]).
pub fn none_left_in(dir: &Path, secs: u64) -> bool {
    for _ in 0..secs * 20 {
        if processes_in(dir).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Waits up to `secs` for a process to be gone.
pub fn gone_within(pid: i32, secs: u64) -> bool {
    for _ in 0..secs * 20 {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Calls a tool, asserts it succeeded, and returns its structured content.
pub async fn call_ok(session: &Session, tool: &str, args: Value) -> Value {
    let r = call(session, tool, args).await;
    ok(&r).clone()
}

/// `terraform_init`, `terraform_plan` and `terraform_apply` of that plan in `path`, each
/// expected to succeed (the server must have apply enabled).
pub async fn deploy(session: &Session, path: &str) {
    call_ok(session, "terraform_init", json!({ "path": path })).await;
    let plan = call_ok(session, "terraform_plan", json!({ "path": path })).await;
    call_ok(
        session,
        "terraform_apply",
        json!({"path": path, "plan_id": plan["plan_id"]}),
    )
    .await;
}

impl Sandbox {
    /// Copies fixture `name` into the root under another name (for several runs of one fixture).
    pub fn add_fixture_as(&self, name: &str, as_name: &str) {
        copy_dir(
            &manifest_dir().join("tests/fixtures").join(name),
            &self.root.join(as_name),
        );
    }

    /// Hands the whole sandbox to `uid` (for running the server as an unprivileged user).
    pub fn chown_all(&self, uid: u32) {
        fn walk(p: &Path, uid: u32) {
            std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
            if p.is_dir() && !p.is_symlink() {
                for e in std::fs::read_dir(p).unwrap() {
                    walk(&e.unwrap().path(), uid);
                }
            }
        }
        walk(self.dir.path(), uid);
    }
}

/// The escape stand-in (tests/fixtures/standin/escape.c), compiled once per test process into a
/// directory of its own (the sandbox lets terraform's directory be read and executed).
pub fn escape_standin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("terrarium-escape-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            let out = dir.join("terraform");
            let status = std::process::Command::new("cc")
                .args(["-O2", "-o"])
                .arg(&out)
                .arg(manifest_dir().join("tests/fixtures/standin/escape.c"))
                .status()
                .expect("cc (a C compiler) is needed for the escape stand-in");
            assert!(status.success(), "compiling the escape stand-in failed");
            out
        })
        .clone()
}

/// Like [`connect`], also returning the server's pid; `uid` runs it as another user.
pub async fn connect_as(env: &BTreeMap<String, String>, uid: Option<u32>) -> (Session, u32) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_terrarium"));
    cmd.arg("serve").env_clear().envs(env).current_dir("/");
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let (transport, _stderr) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn terrarium");
    let pid = transport.id().expect("server pid");
    (
        Client::default()
            .serve(transport)
            .await
            .expect("MCP initialize"),
        pid,
    )
}

pub fn is_root() -> bool {
    // SAFETY: no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// `terrarium serve --http` on an ephemeral loopback port, with its stderr collected.
pub struct HttpServer {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub stderr: Arc<Mutex<String>>,
}

impl HttpServer {
    pub fn start(env: &BTreeMap<String, String>, extra_args: &[&str]) -> HttpServer {
        use std::io::BufRead;
        let listen: &[&str] = if extra_args.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_terrarium"))
            .args(["serve", "--http"])
            .args(listen)
            .args(extra_args)
            .env_clear()
            .envs(env)
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn terrarium serve --http");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                // Recorded first, so that everything up to the address is there when start returns.
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                let rest = line
                    .strip_prefix("terrarium: serving MCP at http://")
                    .or_else(|| line.strip_prefix("terrarium: serving MCP at https://"));
                if let Some(rest) = rest {
                    let _ = tx.send(rest.trim_end_matches("/mcp").to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("the HTTP server did not start: {}", stderr.lock().unwrap());
            }
        };
        HttpServer {
            child,
            addr,
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait(&mut self, secs: u64) -> Option<i32> {
        for _ in 0..secs * 20 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An rmcp client over Streamable HTTP with a bearer token.
pub async fn connect_http(url: &str, token: &str) -> RunningService<RoleClient, Client> {
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_string())
            .auth_header(token.to_string()),
    );
    Client::default()
        .serve(transport)
        .await
        .expect("MCP initialize over HTTP")
}

/// Sends a tool call without waiting for its answer (to cancel it, or to act while it runs).
pub async fn start_call(
    session: &Session,
    tool: &str,
    args: Value,
) -> rmcp::service::RequestHandle<RoleClient> {
    use rmcp::model::{ClientRequest, Request};
    let args: Map<String, Value> = args.as_object().cloned().unwrap_or_default();
    session
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(
                CallToolRequestParams::new(tool.to_string()).with_arguments(args),
            )),
            rmcp::service::PeerRequestOptions::no_options(),
        )
        .await
        .expect("send the tool call")
}

/// Starts a tool call on a task of its own and returns its eventual answer (for acting, say
/// sending a signal, while the call runs).
pub fn spawn_call(
    session: &Session,
    tool: &'static str,
    args: Value,
) -> tokio::task::JoinHandle<Result<CallToolResult, rmcp::ServiceError>> {
    let peer = session.peer().clone();
    let args: Map<String, Value> = args.as_object().cloned().unwrap_or_default();
    tokio::spawn(async move {
        peer.call_tool(CallToolRequestParams::new(tool).with_arguments(args))
            .await
    })
}

/// Plants `script` as the provider `registry.terraform.io/hashicorp/<name>` 1.0.0 in the
/// workspace `ws`, with a matching `.terraform.lock.hcl` and a `main.tf` that requires it:
/// terraform then runs the script at `validate` and `plan` time, without `init` or network —
/// workspace code, the way an attacker's pull request would carry it.
pub fn plant_provider(ws: &Path, name: &str, script: &str) {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    let dir = ws.join(format!(
        ".terraform/providers/registry.terraform.io/hashicorp/{name}/1.0.0/linux_amd64"
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = format!("terraform-provider-{name}_v1.0.0");
    std::fs::write(dir.join(&file), script).unwrap();
    std::fs::set_permissions(dir.join(&file), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Terraform's "h1" directory hash: sha256 over "<hex sha256 of file>  <name>\n" lines.
    let line = format!(
        "{}  {file}\n",
        hex::encode(Sha256::digest(script.as_bytes()))
    );
    let h1 = base64(&Sha256::digest(line.as_bytes()));
    std::fs::write(
        ws.join(".terraform.lock.hcl"),
        format!(
            "provider \"registry.terraform.io/hashicorp/{name}\" {{\n  version = \"1.0.0\"\n  hashes = [\"h1:{h1}\"]\n}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        ws.join("main.tf"),
        format!(
            "terraform {{\n  required_providers {{\n    {name} = {{\n      source  = \"hashicorp/{name}\"\n      version = \"1.0.0\"\n    }}\n  }}\n}}\n\nprovider \"{name}\" {{}}\n"
        ),
    )
    .unwrap();
}

/// Standard base64 with padding (for the lock file's hash).
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Pids of live processes whose command line contains `needle` (on the host, whatever
/// namespaces the runs had).
pub fn processes_running(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && alive(pid) {
            found.push(pid);
        }
    }
    found
}
