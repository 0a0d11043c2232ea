//! The GitHub App end to end, against a local server that behaves like the GitHub API
//! (tests/common/github.rs) and the real Terraform: App JWT → repository-scoped installation
//! token (cached, refreshed), `github_prepare_workspace` with safe extraction, `ci plan` reporting
//! on a pull request (comment updated in place, split when long, check run), and the webhook
//! (signatures, replays, forks, the allowlist, the background plan).

use std::time::Duration;

use crate::common::github::{APP_ID, MockGitHub, app_private_key, wrong_private_key};
use crate::common::tarball::{Kind, tarball};
use crate::common::*;
use serde_json::{Value, json};

const SHA1: &str = "1111111111111111111111111111111111111111";
const SHA2: &str = "2222222222222222222222222222222222222222";

fn repo_fixture() -> std::path::PathBuf {
    manifest_dir().join("tests/fixtures/gh_repo")
}

fn gh_env(
    sb: &Sandbox,
    mock: &MockGitHub,
    key: &str,
    extra: &[(&str, &str)],
) -> std::collections::BTreeMap<String, String> {
    let app_id = APP_ID.to_string();
    let url = mock.url();
    let mut all: Vec<(&str, &str)> = vec![
        ("TERRARIUM_GITHUB_APP_ID", &app_id),
        ("TERRARIUM_GITHUB_PRIVATE_KEY", key),
        ("TERRARIUM_GITHUB_API_URL", &url),
        ("TERRARIUM_GITHUB_REPOS", "acme/*"),
    ];
    all.extend_from_slice(extra);
    sb.env(&terraform(), &all)
}

/// No credential reaches a result, the audit trail or the logs.
fn assert_no_secrets(mock: &MockGitHub, texts: &[&str]) {
    let key = app_private_key();
    let key_line = key.lines().nth(1).unwrap();
    let tokens: Vec<String> = mock.with(|s| s.tokens.iter().map(|t| t.token.clone()).collect());
    for t in texts {
        assert!(!t.contains(key_line), "the private key leaked");
        for tok in &tokens {
            assert!(!t.contains(tok.as_str()), "an installation token leaked");
        }
        assert!(!t.contains("ghs_mock"), "an installation token leaked");
    }
}

#[tokio::test]
async fn prepare_workspace_fetches_with_a_scoped_token_and_the_workspace_plans() {
    let mock = MockGitHub::start().await;
    mock.serve_dir("acme/infra", "main", &repo_fixture());
    let sb = Sandbox::new(&[]);
    let env = gh_env(
        &sb,
        &mock,
        &app_private_key(),
        &[("TERRARIUM_ENABLE_APPLY", "true")],
    );
    let session = connect(&env).await;

    let tools = session.list_all_tools().await.unwrap();
    let tool = tools
        .iter()
        .find(|t| t.name == "github_prepare_workspace")
        .expect("advertised when GitHub is configured");
    let ann = tool.annotations.as_ref().unwrap();
    assert_eq!(ann.read_only_hint, Some(false));
    assert_eq!(ann.destructive_hint, Some(false));
    assert_eq!(ann.open_world_hint, Some(true));

    let r = call(
        &session,
        "github_prepare_workspace",
        json!({"owner": "acme", "repo": "infra", "ref": "main", "subdir": "envs/staging"}),
    )
    .await;
    assert!(
        !is_error(&r),
        "{} {:?}",
        text(&r),
        mock.with(|s| s.jwt_rejections.clone())
    );
    let s = sc(&r).clone();
    let path = s["path"].as_str().unwrap().to_string();
    assert!(
        path.starts_with("github/acme/infra/main-") && path.ends_with("/envs/staging"),
        "{path}"
    );
    assert!(sb.root.join(&path).join("main.tf").is_file());
    assert!(
        sb.root
            .join(&path)
            .join("../../modules/label/main.tf")
            .is_file()
    );

    // The App JWT was verified by the mock; the token is scoped to the one repository.
    assert!(!mock.with(|s| s.jwt_claims.is_empty()));
    assert!(mock.with(|s| s.jwt_rejections.is_empty()));
    let scopes: Vec<Vec<String>> =
        mock.with(|s| s.tokens.iter().map(|t| t.repositories.clone()).collect());
    assert_eq!(scopes, vec![vec!["infra".to_string()]]);
    assert!(
        mock.requests()
            .contains(&"GET /repos/acme/infra/installation".to_string())
    );

    // The prepared workspace is an ordinary workspace: it plans with the real Terraform.
    call_ok(&session, "terraform_init", json!({"path": path})).await;
    let plan = call_ok(&session, "terraform_plan", json!({"path": path})).await;
    assert_eq!(plan["changes"], true, "{plan}");

    // Terraform's children never see the server's GitHub credentials.
    let prepared = call_ok(
        &session,
        "github_prepare_workspace",
        json!({"owner": "acme", "repo": "infra", "ref": "main", "subdir": "envs/probe"}),
    )
    .await;
    let probe = prepared["path"].as_str().unwrap().to_string();
    call_ok(&session, "terraform_init", json!({"path": probe})).await;
    let plan = call_ok(&session, "terraform_plan", json!({"path": probe})).await;
    call_ok(
        &session,
        "terraform_apply",
        json!({"path": probe, "plan_id": plan["plan_id"]}),
    )
    .await;
    let seen = std::fs::read_to_string(sb.root.join(&probe).join("seen-env.txt")).unwrap();
    assert!(seen.contains("PATH="), "the probe ran: {seen}");
    assert!(!seen.contains("GITHUB"), "{seen}");

    session.cancel().await.unwrap();
    let audit = sb.audit_text();
    let ev = sb
        .audit_events()
        .into_iter()
        .find(|e| e["tool"] == "github_prepare_workspace")
        .expect("audited");
    assert_eq!(ev["success"], true);
    assert_eq!(ev["workspace"], json!(path));
    assert_no_secrets(&mock, &[&text(&r), &s.to_string(), &audit, &seen]);
}

#[tokio::test]
async fn installation_tokens_are_cached_and_refreshed_before_expiry() {
    let mock = MockGitHub::start().await;
    mock.serve_dir("acme/infra", "main", &repo_fixture());
    let sb = Sandbox::new(&[]);
    let session = connect(&gh_env(&sb, &mock, &app_private_key(), &[])).await;
    let args = json!({"owner": "acme", "repo": "infra", "ref": "main"});

    // Hour-long tokens: one token serves every call.
    for _ in 0..3 {
        call_ok(&session, "github_prepare_workspace", args.clone()).await;
    }
    assert_eq!(mock.token_requests(), 1, "the token is cached");

    // A token with just over ten minutes left is used; once under ten minutes it is renewed.
    mock.with(|s| {
        s.tokens.clear();
        s.token_ttl_secs = 612;
    });
    let session2 = {
        let sb2 = Sandbox::new(&[]);
        let s = connect(&gh_env(&sb2, &mock, &app_private_key(), &[])).await;
        (s, sb2)
    };
    call_ok(&session2.0, "github_prepare_workspace", args.clone()).await;
    call_ok(&session2.0, "github_prepare_workspace", args.clone()).await;
    assert_eq!(mock.token_requests(), 1, "still more than ten minutes left");
    tokio::time::sleep(Duration::from_secs(13)).await;
    call_ok(&session2.0, "github_prepare_workspace", args.clone()).await;
    assert_eq!(
        mock.token_requests(),
        2,
        "renewed once less than ten minutes were left"
    );
    session.cancel().await.unwrap();
    session2.0.cancel().await.unwrap();
}

#[tokio::test]
async fn a_401_from_github_is_a_clear_error() {
    let mock = MockGitHub::start().await;
    mock.serve_dir("acme/infra", "main", &repo_fixture());
    let sb = Sandbox::new(&[]);
    let session = connect(&gh_env(&sb, &mock, &wrong_private_key(), &[])).await;
    let r = call(
        &session,
        "github_prepare_workspace",
        json!({"owner": "acme", "repo": "infra", "ref": "main"}),
    )
    .await;
    assert!(is_error(&r));
    let t = text(&r);
    assert!(
        t.contains("GitHub refused the server's credentials") && t.contains("401"),
        "{t}"
    );
    assert_eq!(sc(&r)["error"]["kind"], "github");
    assert!(
        mock.with(|s| s.jwt_rejections.iter().any(|w| w.contains("signature"))),
        "the mock refused the JWT signed with the wrong key"
    );
    assert!(!sb.root.join("github").exists());
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn hostile_archives_and_arguments_are_refused_and_leave_nothing() {
    let mock = MockGitHub::start().await;
    mock.serve_bytes(
        "acme/infra",
        "traversal",
        tarball(&[("top/", Kind::Dir), ("top/../../evil.tf", Kind::File(b"x"))]),
    );
    mock.serve_bytes(
        "acme/infra",
        "symlink",
        tarball(&[
            ("top/", Kind::Dir),
            ("top/passwd", Kind::Symlink("/etc/passwd")),
        ]),
    );
    let big: &'static [u8] = Box::leak(vec![b'a'; 50_000].into_boxed_slice());
    mock.serve_bytes(
        "acme/infra",
        "oversize",
        tarball(&[("top/", Kind::Dir), ("top/big.tf", Kind::File(big))]),
    );
    mock.serve_dir("acme/infra", "main", &repo_fixture());
    mock.with(|s| s.installations.insert("other/repo".into(), 99));
    let sb = Sandbox::new(&[]);
    let session = connect(&gh_env(
        &sb,
        &mock,
        &app_private_key(),
        &[("TERRARIUM_GITHUB_EXTRACT_MAX_BYTES", "20000")],
    ))
    .await;
    let prepare = |reference: &str, subdir: Option<&str>| {
        let mut a = json!({"owner": "acme", "repo": "infra", "ref": reference});
        if let Some(s) = subdir {
            a["subdir"] = json!(s);
        }
        a
    };
    for (reference, expect) in [
        ("traversal", "leaves the extraction directory"),
        ("symlink", "points outside"),
        ("oversize", "larger than the limit"),
    ] {
        let r = call(
            &session,
            "github_prepare_workspace",
            prepare(reference, None),
        )
        .await;
        assert!(is_error(&r), "{reference}");
        assert!(text(&r).contains(expect), "{reference}: {}", text(&r));
    }
    // A subdir that leaves the extracted tree is refused, and the tree removed.
    let r = call(
        &session,
        "github_prepare_workspace",
        prepare("main", Some("envs/../../../../")),
    )
    .await;
    assert!(is_error(&r), "{}", text(&r));
    let left: Vec<_> = std::fs::read_dir(sb.root.join("github/acme/infra"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "refused fetches left {left:?}");
    assert!(!sb.dir.path().join("evil.tf").exists());

    // Argument injection never reaches GitHub: the schema refuses it, naming the field.
    let before = mock.requests().len();
    let r = call(
        &session,
        "github_prepare_workspace",
        prepare("--upload-pack=touch /tmp/x", None),
    )
    .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("/ref"), "{}", text(&r));
    for bad in [
        json!({"owner": "acme", "repo": "../etc", "ref": "main"}),
        json!({"owner": "-acme", "repo": "infra", "ref": "main"}),
        json!({"owner": "acme", "repo": "infra", "ref": "a..b"}),
    ] {
        let r = call(&session, "github_prepare_workspace", bad.clone()).await;
        assert!(is_error(&r), "{bad}");
    }
    // A repository outside the allowlist is refused before any call to GitHub.
    let r = call(
        &session,
        "github_prepare_workspace",
        json!({"owner": "other", "repo": "repo", "ref": "main"}),
    )
    .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("TERRARIUM_GITHUB_REPOS"), "{}", text(&r));
    assert_eq!(mock.requests().len(), before, "nothing was asked of GitHub");
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn a_download_that_never_finishes_is_cut_at_the_deadline() {
    let mock = MockGitHub::start().await;
    mock.serve_bytes("acme/infra", "stall", Vec::new());
    let sb = Sandbox::new(&[]);
    let session = connect(&gh_env(
        &sb,
        &mock,
        &app_private_key(),
        &[("TERRARIUM_TIMEOUT_SECS", "2")],
    ))
    .await;
    let started = std::time::Instant::now();
    let r = call(
        &session,
        "github_prepare_workspace",
        json!({"owner": "acme", "repo": "infra", "ref": "stall"}),
    )
    .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("took longer than 2s"), "{}", text(&r));
    assert!(started.elapsed() < Duration::from_secs(10));
    let left: Vec<_> = std::fs::read_dir(sb.root.join("github/acme/infra"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty());
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn without_credentials_the_tool_is_not_offered() {
    let (_sb, session) = Setup::new(&[]).stdio().await;
    let tools = session.list_all_tools().await.unwrap();
    assert!(!tools.iter().any(|t| t.name == "github_prepare_workspace"));
    let r = call(
        &session,
        "github_prepare_workspace",
        json!({"owner": "acme", "repo": "infra", "ref": "main"}),
    )
    .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("TERRARIUM_GITHUB_APP_ID"), "{}", text(&r));
    session.cancel().await.unwrap();
}

/// `terrarium ci plan` in a checkout of the fixture repository, reporting to the mock.
async fn ci_plan(
    mock: &MockGitHub,
    checkout: &Sandbox,
    args: &[&str],
    extra: &[(&str, &str)],
) -> (i32, String, String) {
    let mut env = gh_env(checkout, mock, &app_private_key(), extra);
    env.remove("TERRARIUM_WORKSPACE_ROOT");
    env.insert(
        "GITHUB_WORKSPACE".into(),
        checkout.root.display().to_string(),
    );
    env.insert("TERRARIUM_OUTPUT_LIMIT_BYTES".into(), (4 << 20).to_string());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_terrarium"))
            .args(["ci", "plan"])
            .args(&args)
            .env_clear()
            .envs(&env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn checkout() -> Sandbox {
    let sb = Sandbox::new(&[]);
    copy_dir(&repo_fixture(), &sb.root);
    sb
}

fn fences_balanced(s: &str) -> bool {
    s.lines()
        .filter(|l| l.trim_start().starts_with("```"))
        .count()
        % 2
        == 0
}

#[tokio::test(flavor = "multi_thread")]
async fn ci_plan_reports_on_the_pull_request_with_exit_codes() {
    let mock = MockGitHub::start().await;
    // 150 files: the Terraform one is on the second page of the files API.
    let docs: Vec<String> = (0..149).map(|i| format!("docs/page-{i}.md")).collect();
    let mut files: Vec<&str> = docs.iter().map(String::as_str).collect();
    files.push("envs/staging/main.tf");
    mock.add_pull("acme/infra", 1, SHA1, &files, false);
    mock.add_pull("acme/infra", 2, SHA1, &["README.md"], false);
    mock.add_pull("acme/infra", 3, SHA1, &["envs/broken/main.tf"], false);
    let sb = checkout();

    // Changes: exit 2; only the directory the pull request touches is planned.
    let (code, out, err) = ci_plan(&mock, &sb, &["--repo", "acme/infra", "--pr", "1"], &[]).await;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains("| `envs/staging` | 📝 changes | 1 | 0 | 0 |"),
        "{out}"
    );
    assert!(!out.contains("envs/prod"), "{out}");
    let pages = mock
        .requests()
        .iter()
        .filter(|r| *r == "GET /repos/acme/infra/pulls/1/files")
        .count();
    assert_eq!(pages, 2, "both pages of the files were read");
    let comments = mock.comments();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].issue, 1);
    assert!(comments[0].body.contains("envs/staging") && comments[0].body.contains("111111111111"));
    let runs = mock.check_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["head_sha"], SHA1);
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(runs[0]["conclusion"], "success");
    assert_eq!(
        runs[0]["output"]["title"],
        "1 to add, 0 to change, 0 to destroy"
    );

    // The same pull request again: the comment is updated, not duplicated.
    let first_id = comments[0].id;
    let (code, _, _) = ci_plan(&mock, &sb, &["--repo", "acme/infra", "--pr", "1"], &[]).await;
    assert_eq!(code, 2);
    let comments = mock.comments();
    assert_eq!(comments.len(), 1, "updated in place");
    assert_eq!(comments[0].id, first_id);

    // No Terraform touched: exit 0. An error: exit 1 and a failed check run.
    let (code, out, _) = ci_plan(&mock, &sb, &["--repo", "acme/infra", "--pr", "2"], &[]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = ci_plan(&mock, &sb, &["--repo", "acme/infra", "--pr", "3"], &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("| `envs/broken` | ❌ error |"), "{out}");
    let failed = mock
        .check_runs()
        .into_iter()
        .find(|r| r["conclusion"] == "failure")
        .expect("a failed check run");
    assert!(
        failed["output"]["title"]
            .as_str()
            .unwrap()
            .contains("failed")
    );

    // In GitHub Actions the pull request comes from the event file.
    let event = sb.dir.path().join("event.json");
    let mut payload = json!({"action": "synchronize", "number": 1,
        "repository": {"full_name": "acme/infra"}});
    payload["pull_request"] = mock.pull_json("acme/infra", 1);
    std::fs::write(&event, payload.to_string()).unwrap();
    let ev = event.display().to_string();
    let (code, out, err) = ci_plan(&mock, &sb, &[], &[("GITHUB_EVENT_PATH", &ev)]).await;
    assert_eq!(code, 2, "{out}\n{err}");
    assert_eq!(mock.comments().iter().filter(|c| c.issue == 1).count(), 1);
    assert_no_secrets(&mock, &[&out, &err, &sb.audit_text()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn long_plans_are_split_into_balanced_comment_parts() {
    let mock = MockGitHub::start().await;
    mock.add_pull("acme/infra", 9, SHA1, &["envs/big/main.tf"], false);
    let sb = checkout();
    let (code, out, err) = ci_plan(&mock, &sb, &["--repo", "acme/infra", "--pr", "9"], &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        out.len() > 65_536,
        "the fixture makes a long report: {} bytes\n{}",
        out.len(),
        &out[..out.len().min(3000)]
    );
    let parts = mock.comments();
    assert!(parts.len() >= 2, "split into {} parts", parts.len());
    for (i, p) in parts.iter().enumerate() {
        assert!(p.body.chars().count() <= 65_536);
        assert!(
            fences_balanced(&p.body),
            "part {i} has unbalanced code fences"
        );
        assert_eq!(
            p.body.matches("<details").count(),
            p.body.matches("</details>").count(),
            "part {i}"
        );
    }
    assert!(
        parts
            .iter()
            .any(|p| p.body.contains("terraform_data.many[1999]"))
    );
    let ids: Vec<u64> = parts.iter().map(|c| c.id).collect();
    // Again: the same comments are edited; none added.
    let (code, _, _) = ci_plan(&mock, &sb, &["--repo", "acme/infra", "--pr", "9"], &[]).await;
    assert_eq!(code, 2);
    let again: Vec<u64> = mock.comments().iter().map(|c| c.id).collect();
    assert_eq!(ids, again);
}

fn webhook_post(
    server: &HttpServer,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: Option<String>,
) -> (u16, Value) {
    let url = server.url("/github/webhook");
    let body = body.to_vec();
    let event = event.to_string();
    let delivery = delivery.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut req = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .header("x-github-event", event)
                .header("x-github-delivery", delivery)
                .body(body);
            if let Some(sig) = signature {
                req = req.header("x-hub-signature-256", sig);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        })
    })
    .join()
    .unwrap()
}

fn pr_event(mock: &MockGitHub, action: &str, repo: &str, number: u64) -> Vec<u8> {
    json!({
        "action": action,
        "number": number,
        "pull_request": mock.pull_json(repo, number),
        "repository": {"id": 1, "full_name": repo, "name": repo.split('/').nth(1),
                        "owner": {"login": repo.split('/').next()}},
        "installation": {"id": crate::common::github::INSTALLATION_ID},
        "sender": {"login": "octocat", "type": "User"},
    })
    .to_string()
    .into_bytes()
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    for _ in 0..secs * 10 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_verifies_signatures_dedupes_and_plans_in_the_background() {
    const SECRET: &str = "It's a Secret to Everybody";
    let mock = MockGitHub::start().await;
    mock.add_pull("acme/infra", 5, SHA1, &["envs/prod/main.tf"], false);
    mock.serve_dir("acme/infra", SHA1, &repo_fixture());
    mock.add_pull("acme/infra", 6, SHA1, &["envs/prod/main.tf"], true);
    mock.with(|s| s.installations.insert("evil/infra".into(), 5));
    let sb = Sandbox::new(&[]);
    let env = gh_env(
        &sb,
        &mock,
        &app_private_key(),
        &[
            ("TERRARIUM_GITHUB_WEBHOOK_SECRET", SECRET),
            (
                "TERRARIUM_AUTH_TOKENS",
                "ops:0123456789abcdef0123456789abcdef",
            ),
        ],
    );
    let server = HttpServer::start(&env, &[]);
    let sign = |b: &[u8]| Some(webhook_sign(SECRET.as_bytes(), b));

    // GitHub's documented example: this secret and body give this signature.
    assert_eq!(
        webhook_sign(SECRET.as_bytes(), b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );

    let body = pr_event(&mock, "opened", "acme/infra", 5);
    // Unsigned, wrongly signed, signed with another secret, or signed over another body: 401.
    let (status, _) = webhook_post(&server, "pull_request", "d-1", &body, None);
    assert_eq!(status, 401);
    let (status, _) = webhook_post(
        &server,
        "pull_request",
        "d-1",
        &body,
        Some("sha256=00".into()),
    );
    assert_eq!(status, 401);
    let other = webhook_sign(b"another secret", &body);
    let (status, _) = webhook_post(&server, "pull_request", "d-1", &body, Some(other));
    assert_eq!(status, 401);
    let (status, _) = webhook_post(&server, "pull_request", "d-1", b"{}", sign(&body));
    assert_eq!(status, 401);
    // Signed but not JSON: 400.
    let (status, _) = webhook_post(
        &server,
        "pull_request",
        "d-0",
        b"not json",
        sign(b"not json"),
    );
    assert_eq!(status, 400);
    assert!(
        mock.check_runs().is_empty(),
        "nothing ran for bad deliveries"
    );

    // A good delivery: 202 at once, the plan in the background.
    let (status, v) = webhook_post(&server, "pull_request", "d-1", &body, sign(&body));
    assert_eq!((status, v["status"].as_str()), (202, Some("queued")));
    wait_for("the check run to complete", 90, || {
        mock.check_runs().iter().any(|r| r["status"] == "completed")
    })
    .await;
    let runs = mock.check_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["conclusion"], "success", "{}", runs[0]);
    assert_eq!(runs[0]["head_sha"], SHA1);
    wait_for("the comment", 10, || !mock.comments().is_empty()).await;
    let comments = mock.comments();
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0]
            .body
            .contains("| `envs/prod` | 📝 changes | 1 | 0 | 0 |"),
        "{}",
        comments[0].body
    );
    // The fetched tree is gone once the plan is reported.
    wait_for("the fetched tree to be removed", 10, || {
        std::fs::read_dir(sb.root.join(".terrarium-pulls/acme/infra"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    })
    .await;

    // The same delivery again (a replay, even correctly signed): nothing more runs.
    let (status, v) = webhook_post(&server, "pull_request", "d-1", &body, sign(&body));
    assert_eq!((status, v["status"].as_str()), (200, Some("duplicate")));

    // A new push to the pull request: the same comment is updated.
    let mut pr = mock.pull_json("acme/infra", 5);
    pr["head"]["sha"] = json!(SHA2);
    mock.with(|s| s.pulls.insert("acme/infra#5".into(), pr));
    mock.serve_dir("acme/infra", SHA2, &repo_fixture());
    let body2 = pr_event(&mock, "synchronize", "acme/infra", 5);
    let (status, _) = webhook_post(&server, "pull_request", "d-2", &body2, sign(&body2));
    assert_eq!(status, 202);
    wait_for("the second check run", 90, || {
        mock.check_runs()
            .iter()
            .any(|r| r["head_sha"] == SHA2 && r["status"] == "completed")
    })
    .await;
    wait_for("the comment update", 10, || {
        mock.comments()
            .iter()
            .any(|c| c.body.contains("222222222222"))
    })
    .await;
    assert_eq!(mock.comments().len(), 1, "updated, not duplicated");

    // Ignored: a fork, a closed pull request, another event, a repository not allowed.
    let fork = pr_event(&mock, "opened", "acme/infra", 6);
    let (status, v) = webhook_post(&server, "pull_request", "d-3", &fork, sign(&fork));
    assert_eq!((status, v["status"].as_str()), (200, Some("ignored")));
    assert!(v["reason"].as_str().unwrap().contains("fork"));
    let closed = pr_event(&mock, "closed", "acme/infra", 5);
    let (_, v) = webhook_post(&server, "pull_request", "d-4", &closed, sign(&closed));
    assert_eq!(v["status"], "ignored");
    let ping = br#"{"zen":"Keep it logically awesome."}"#;
    let (status, v) = webhook_post(&server, "ping", "d-5", ping, sign(ping));
    assert_eq!((status, v["status"].as_str()), (200, Some("pong")));
    mock.add_pull("evil/infra", 1, SHA1, &["main.tf"], false);
    let evil = pr_event(&mock, "opened", "evil/infra", 1);
    let (_, v) = webhook_post(&server, "pull_request", "d-6", &evil, sign(&evil));
    assert_eq!(v["status"], "ignored");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mock.check_runs().len(),
        2,
        "ignored deliveries plan nothing"
    );
    assert!(
        !mock.requests().iter().any(|r| r.contains("evil")),
        "nothing was asked of GitHub about a repository outside the allowlist"
    );

    let audit = sb.audit_text();
    let hooks: Vec<Value> = sb
        .all_audit_events()
        .into_iter()
        .filter(|e| e["event"] == "github_webhook")
        .collect();
    assert!(hooks.iter().any(|e| e["outcome"] == "rejected"));
    assert!(hooks.iter().any(|e| e["outcome"] == "duplicate"));
    assert!(
        sb.all_audit_events()
            .iter()
            .any(|e| e["event"] == "github_pull_request_plan" && e["exit_code"] == 2)
    );
    let stderr = server.stderr.lock().unwrap().clone();
    assert!(!audit.contains(SECRET) && !stderr.contains(SECRET));
    assert_no_secrets(&mock, &[&audit, &stderr]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_503_and_the_delivery_can_be_sent_again() {
    const SECRET: &str = "queue-secret";
    let mock = MockGitHub::start().await;
    mock.add_pull("acme/infra", 5, SHA1, &["envs/big/main.tf"], false);
    mock.serve_dir("acme/infra", SHA1, &repo_fixture());
    let sb = Sandbox::new(&[]);
    let env = gh_env(
        &sb,
        &mock,
        &app_private_key(),
        &[
            ("TERRARIUM_GITHUB_WEBHOOK_SECRET", SECRET),
            ("TERRARIUM_GITHUB_QUEUE_SIZE", "1"),
            (
                "TERRARIUM_AUTH_TOKENS",
                "ops:0123456789abcdef0123456789abcdef",
            ),
        ],
    );
    let server = HttpServer::start(&env, &[]);
    // Each delivery carries its own body (GitHub's differ; identical ones are replays).
    let base: Value =
        serde_json::from_slice(&pr_event(&mock, "synchronize", "acme/infra", 5)).unwrap();
    let body = |i: usize| {
        let mut v = base.clone();
        v["sender"]["id"] = json!(i);
        serde_json::to_vec(&v).unwrap()
    };
    let sig = |b: &[u8]| Some(webhook_sign(SECRET.as_bytes(), b));
    // One plan running, one waiting: the next deliveries find the queue full.
    let answers: Vec<u16> = (0..5)
        .map(|i| {
            let b = body(i);
            webhook_post(&server, "pull_request", &format!("q-{i}"), &b, sig(&b)).0
        })
        .collect();
    let full = answers
        .iter()
        .position(|s| *s == 503)
        .unwrap_or_else(|| panic!("a full queue: {answers:?}"));
    assert!(
        answers.iter().filter(|s| **s == 202).count() >= 1,
        "{answers:?}"
    );
    assert!(
        answers.iter().all(|s| *s == 202 || *s == 503),
        "{answers:?}"
    );
    // Refused deliveries were not remembered: once there is room, the same id is accepted.
    wait_for("the queue to drain", 120, || {
        mock.check_runs()
            .iter()
            .filter(|r| r["status"] == "completed")
            .count()
            >= answers.iter().filter(|s| **s == 202).count()
    })
    .await;
    let b = body(full);
    let (status, _) = webhook_post(&server, "pull_request", &format!("q-{full}"), &b, sig(&b));
    assert_eq!(status, 202);
}

/// The reviewer's arbitrary write: `a -> .` makes `a/a/a/a/a/a/y` land at the top of the fresh
/// directory, where `../../../../../` is the test's own directory (beside the workspace root,
/// the state dir and the audit trail); the hard link `y` was then copied *through* that link.
fn planted_link_tarball() -> Vec<u8> {
    tarball(&[
        ("top/", Kind::Dir),
        ("top/a", Kind::Symlink(".")),
        ("top/payload", Kind::File(b"owned\n")),
        (
            "top/a/a/a/a/a/a/y",
            Kind::Symlink("../../../../../sentinel.txt"),
        ),
        ("top/y", Kind::Hardlink("top/payload")),
        (
            "top/a/a/a/a/a/a/w",
            Kind::Symlink("../../../../../created.txt"),
        ),
        ("top/w", Kind::Hardlink("top/payload")),
    ])
}

fn plant_sentinel(sb: &Sandbox) {
    std::fs::write(sb.dir.path().join("sentinel.txt"), b"original\n").unwrap();
}

fn assert_sentinel_untouched(sb: &Sandbox, fetched_under: &str) {
    assert_eq!(
        std::fs::read(sb.dir.path().join("sentinel.txt")).unwrap(),
        b"original\n",
        "a file outside the workspace root was overwritten"
    );
    assert!(
        !sb.dir.path().join("created.txt").exists(),
        "a file outside the workspace root was created"
    );
    let left: Vec<_> = std::fs::read_dir(sb.root.join(fetched_under))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a refused archive left {left:?}");
}

#[tokio::test]
async fn prepare_workspace_refuses_an_archive_that_plants_parent_links() {
    let mock = MockGitHub::start().await;
    mock.serve_bytes("acme/infra", "evil", planted_link_tarball());
    let sb = Sandbox::new(&[]);
    plant_sentinel(&sb);
    let session = connect(&gh_env(&sb, &mock, &app_private_key(), &[])).await;
    let r = call(
        &session,
        "github_prepare_workspace",
        json!({"owner": "acme", "repo": "infra", "ref": "evil"}),
    )
    .await;
    assert!(is_error(&r), "{}", text(&r));
    assert!(text(&r).contains("symbolic link"), "{}", text(&r));
    assert_sentinel_untouched(&sb, "github/acme/infra");

    // A link planted in the workspace root (as a run in a workspace `github` could) does not
    // redirect the fetch either.
    std::fs::remove_dir_all(sb.root.join("github")).unwrap();
    std::fs::create_dir_all(sb.dir.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink("../elsewhere", sb.root.join("github")).unwrap();
    mock.serve_dir("acme/infra", "main", &repo_fixture());
    let r = call(
        &session,
        "github_prepare_workspace",
        json!({"owner": "acme", "repo": "infra", "ref": "main"}),
    )
    .await;
    assert!(is_error(&r), "{}", text(&r));
    assert!(text(&r).contains("symbolic link"), "{}", text(&r));
    let elsewhere: Vec<_> = std::fs::read_dir(sb.dir.path().join("elsewhere"))
        .unwrap()
        .collect();
    assert!(
        elsewhere.is_empty(),
        "fetched through a link: {elsewhere:?}"
    );
    session.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_request_archive_that_plants_parent_links_writes_nothing_outside() {
    const SECRET: &str = "archive-secret";
    let mock = MockGitHub::start().await;
    mock.add_pull("acme/infra", 7, SHA1, &["main.tf"], false);
    mock.serve_bytes("acme/infra", SHA1, planted_link_tarball());
    let sb = Sandbox::new(&[]);
    plant_sentinel(&sb);
    let env = gh_env(
        &sb,
        &mock,
        &app_private_key(),
        &[
            ("TERRARIUM_GITHUB_WEBHOOK_SECRET", SECRET),
            (
                "TERRARIUM_AUTH_TOKENS",
                "ops:0123456789abcdef0123456789abcdef",
            ),
        ],
    );
    let server = HttpServer::start(&env, &[]);
    let body = pr_event(&mock, "opened", "acme/infra", 7);
    let sig = Some(webhook_sign(SECRET.as_bytes(), &body));
    let (status, _) = webhook_post(&server, "pull_request", "evil-1", &body, sig);
    assert_eq!(status, 202);
    wait_for("the check run to complete", 60, || {
        mock.check_runs().iter().any(|r| r["status"] == "completed")
    })
    .await;
    let run = mock.check_runs().remove(0);
    assert_eq!(run["conclusion"], "failure", "{run}");
    assert!(run.to_string().contains("symbolic link"), "{run}");
    assert_sentinel_untouched(&sb, ".terrarium-pulls/acme/infra");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_body_under_a_new_delivery_id_plans_nothing_even_after_a_restart() {
    const SECRET: &str = "replay-secret";
    let mock = MockGitHub::start().await;
    mock.add_pull("acme/infra", 8, SHA1, &["README.md"], false);
    mock.serve_dir("acme/infra", SHA1, &repo_fixture());
    let sb = Sandbox::new(&[]);
    let env = gh_env(
        &sb,
        &mock,
        &app_private_key(),
        &[
            ("TERRARIUM_GITHUB_WEBHOOK_SECRET", SECRET),
            (
                "TERRARIUM_AUTH_TOKENS",
                "ops:0123456789abcdef0123456789abcdef",
            ),
        ],
    );
    let sign = |b: &[u8]| Some(webhook_sign(SECRET.as_bytes(), b));
    let body = pr_event(&mock, "opened", "acme/infra", 8);
    let server = HttpServer::start(&env, &[]);
    let (status, _) = webhook_post(&server, "pull_request", "r-1", &body, sign(&body));
    assert_eq!(status, 202);
    wait_for("the check run to complete", 60, || {
        mock.check_runs().iter().any(|r| r["status"] == "completed")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (runs, comments, requests) = (
        mock.check_runs().len(),
        mock.comments().len(),
        mock.requests().len(),
    );
    assert_eq!(runs, 1);

    // The captured delivery sent again under a fresh id (the id is not signed): a duplicate.
    let (status, v) = webhook_post(&server, "pull_request", "r-2", &body, sign(&body));
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("duplicate")),
        "{v}"
    );

    // A restart with the same state dir remembers it, under the old id and under new ones.
    drop(server);
    let server = HttpServer::start(&env, &[]);
    for id in ["r-1", "r-3"] {
        let (status, v) = webhook_post(&server, "pull_request", id, &body, sign(&body));
        assert_eq!(
            (status, v["status"].as_str()),
            (200, Some("duplicate")),
            "{id}: {v}"
        );
    }
    // A delivery older than what is remembered cannot be told from a forgotten one: not planned.
    let mut old: Value = serde_json::from_slice(&body).unwrap();
    old["pull_request"]["updated_at"] = json!("2020-01-01T00:00:00Z");
    let old = serde_json::to_vec(&old).unwrap();
    let (status, v) = webhook_post(&server, "pull_request", "r-4", &old, sign(&old));
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("ignored")),
        "{v}"
    );
    assert!(v["reason"].as_str().unwrap().contains("older"), "{v}");
    // New deliveries are still handled.
    let ping = br#"{"zen":"Design for failure."}"#;
    let (status, v) = webhook_post(&server, "ping", "r-5", ping, sign(ping));
    assert_eq!((status, v["status"].as_str()), (200, Some("pong")));

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.check_runs().len(), runs, "a replay made a check run");
    assert_eq!(mock.comments().len(), comments, "a replay commented");
    assert_eq!(mock.requests().len(), requests, "a replay reached GitHub");

    // The record is private and holds digests, not the ids or bodies.
    let record = sb.state.join("github-webhook-seen");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&record).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(!text.contains("r-1") && !text.contains("acme"), "{text}");
}

/// A plan run with a sandbox that is not strict (a layer disabled, best-effort with a layer
/// missing, or off) says so in the summary, the pull request comment and the check run, where
/// a reviewer looks — not only in a field of each result.
#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_that_is_not_strict_is_stated_on_the_pull_request() {
    let mock = MockGitHub::start().await;
    mock.add_pull("acme/infra", 1, SHA1, &["envs/staging/main.tf"], false);
    mock.add_pull("acme/infra", 2, SHA1, &["envs/staging/main.tf"], false);
    let sb = checkout();
    let (code, out, err) = ci_plan(
        &mock,
        &sb,
        &["--repo", "acme/infra", "--pr", "1"],
        &[("TERRARIUM_SANDBOX_DISABLE", "seccomp")],
    )
    .await;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains("Sandbox not strict") && out.contains("seccomp"),
        "{out}"
    );
    let comment = mock.comments().into_iter().find(|c| c.issue == 1).unwrap();
    assert!(
        comment.body.contains("Sandbox not strict") && comment.body.contains("seccomp"),
        "{}",
        comment.body
    );
    let run = mock.check_runs().pop().unwrap();
    assert!(
        run["output"]["title"]
            .as_str()
            .unwrap()
            .contains("sandbox not strict"),
        "{run}"
    );
    assert!(
        run["output"]["summary"]
            .as_str()
            .unwrap()
            .contains("Sandbox not strict"),
        "{run}"
    );

    // The sandbox off altogether.
    let (code, out, err) = ci_plan(
        &mock,
        &sb,
        &["--repo", "acme/infra", "--pr", "2"],
        &[("TERRARIUM_SANDBOX", "off")],
    )
    .await;
    assert_eq!(code, 2, "{out}\n{err}");
    let comment = mock.comments().into_iter().find(|c| c.issue == 2).unwrap();
    assert!(
        comment.body.contains("TERRARIUM_SANDBOX=off"),
        "{}",
        comment.body
    );

    // A strict sandbox: no notice.
    let (_, out, _) = ci_plan(&mock, &sb, &["--repo", "acme/infra", "--pr", "1"], &[]).await;
    assert!(!out.contains("Sandbox not strict"), "{out}");
}

/// The `X-Hub-Signature-256` header GitHub would send for `body`.
fn webhook_sign(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
