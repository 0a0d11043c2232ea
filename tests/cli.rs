//! `terrarium check-config` and configuration loading, through the real binary.

use std::process::{Command, Output};

use crate::common::*;

fn terrarium(env: &[(&str, &str)], cwd: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_terrarium"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let sb = Sandbox::new(&["basic"]);
    let tf = terraform();
    let env = [
        ("TERRARIUM_WORKSPACE_ROOT", sb.root.to_str().unwrap()),
        ("TERRARIUM_STATE_DIR", sb.state.to_str().unwrap()),
        ("TERRARIUM_TERRAFORM_BIN", tf.to_str().unwrap()),
        ("TERRARIUM_PASSTHROUGH_ENV", "CLOUD_TOKEN"),
        ("CLOUD_TOKEN", "tok-check-config-secret"),
        ("TERRARIUM_TIMEOUT_SECS", "77"),
    ];
    let o = terrarium(&env, sb.dir.path(), &["check-config"]);
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("TERRARIUM_TIMEOUT_SECS=77"), "{text}");
    assert!(
        text.contains("TERRARIUM_PASSTHROUGH_ENV=CLOUD_TOKEN"),
        "{text}"
    );
    assert!(text.contains("terraform runnable: v1.15.5"), "{text}");
    assert!(
        !text.contains("tok-check-config-secret"),
        "a credential was printed: {text}"
    );
}

#[test]
fn check_config_fails_clearly() {
    let sb = Sandbox::new(&["basic"]);
    let tf = terraform();
    let state = sb.state.to_str().unwrap().to_string();
    let root = sb.root.to_str().unwrap().to_string();
    let missing = sb.dir.path().join("missing").display().to_string();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("TERRARIUM_TERRAFORM_BIN", tf.to_str().unwrap())],
            "TERRARIUM_WORKSPACE_ROOT",
        ),
        (
            vec![
                ("TERRARIUM_WORKSPACE_ROOT", &missing),
                ("TERRARIUM_TERRAFORM_BIN", tf.to_str().unwrap()),
            ],
            "TERRARIUM_WORKSPACE_ROOT",
        ),
        (
            vec![
                ("TERRARIUM_WORKSPACE_ROOT", &root),
                ("TERRARIUM_TERRAFORM_BIN", "/nonexistent/terraform"),
            ],
            "TERRARIUM_TERRAFORM_BIN",
        ),
        (
            vec![
                ("TERRARIUM_WORKSPACE_ROOT", &root),
                ("TERRARIUM_TERRAFORM_BIN", tf.to_str().unwrap()),
                ("TERRARIUM_ENABLE_APPLY", "sure"),
            ],
            "TERRARIUM_ENABLE_APPLY",
        ),
        (
            vec![
                ("TERRARIUM_WORKSPACE_ROOT", &root),
                ("TERRARIUM_TERRAFORM_BIN", "/bin/false"),
            ],
            "terraform is not runnable",
        ),
    ];
    for (mut env, expect) in cases {
        env.push(("TERRARIUM_STATE_DIR", &state));
        let o = terrarium(&env, sb.dir.path(), &["check-config"]);
        let text = out(&o);
        assert!(!o.status.success(), "{expect}: {text}");
        assert!(text.contains(expect), "expected {expect:?} in: {text}");
    }
}

#[test]
fn dotenv_fills_in_and_the_environment_wins() {
    let sb = Sandbox::new(&["basic"]);
    let tf = terraform();
    std::fs::write(
        sb.dir.path().join(".env"),
        format!(
            "TERRARIUM_WORKSPACE_ROOT={}\nTERRARIUM_STATE_DIR={}\nTERRARIUM_TIMEOUT_SECS=11\nTERRARIUM_PLAN_TTL_SECS=22\n",
            sb.root.display(),
            sb.state.display()
        ),
    )
    .unwrap();
    let secret = sb.dir.path().join("ttl");
    std::fs::write(&secret, "33\n").unwrap();
    let env = [
        ("TERRARIUM_TERRAFORM_BIN", tf.to_str().unwrap()),
        ("TERRARIUM_TIMEOUT_SECS", "44"),
        ("TERRARIUM_KILL_GRACE_SECS_FILE", secret.to_str().unwrap()),
    ];
    let o = terrarium(&env, sb.dir.path(), &["check-config"]);
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("TERRARIUM_PLAN_TTL_SECS=22"),
        ".env value used: {text}"
    );
    assert!(
        text.contains("TERRARIUM_TIMEOUT_SECS=44"),
        "environment wins over .env: {text}"
    );
    assert!(
        text.contains("TERRARIUM_KILL_GRACE_SECS=33"),
        "_FILE value used: {text}"
    );
}

#[test]
fn log_level_flag_is_validated() {
    let sb = Sandbox::new(&[]);
    let tf = terraform();
    let env = [
        ("TERRARIUM_WORKSPACE_ROOT", sb.root.to_str().unwrap()),
        ("TERRARIUM_STATE_DIR", sb.state.to_str().unwrap()),
        ("TERRARIUM_TERRAFORM_BIN", tf.to_str().unwrap()),
    ];
    let o = terrarium(
        &env,
        sb.dir.path(),
        &["--log-level", "loud", "check-config"],
    );
    assert!(!o.status.success());
    assert!(out(&o).contains("--log-level"), "{}", out(&o));
    let o = terrarium(&env, sb.dir.path(), &["--log-level", "4", "check-config"]);
    assert!(o.status.success(), "{}", out(&o));
}

/// `.env` and `terrarium.toml` inside the workspace root are workspace content: `serve` and
/// `check-config` started there refuse to start, naming the file, instead of running with the
/// sandbox off and the server's credentials passed to terraform.
#[test]
fn configuration_files_inside_the_workspace_root_are_refused() {
    let sb = Sandbox::new(&["basic"]);
    let tf = terraform();
    let team = sb.root.join("basic");
    let env = [
        ("TERRARIUM_WORKSPACE_ROOT", sb.root.to_str().unwrap()),
        ("TERRARIUM_STATE_DIR", sb.state.to_str().unwrap()),
        ("TERRARIUM_TERRAFORM_BIN", tf.to_str().unwrap()),
    ];
    let hostile_env = "TERRARIUM_SANDBOX=off\nTERRARIUM_PASSTHROUGH_PREFIXES=TERRARIUM_\n";
    for (name, content) in [
        (".env", hostile_env),
        ("terrarium.toml", "sandbox = \"off\"\n"),
    ] {
        for dir in [&sb.root, &team] {
            let file = dir.join(name);
            std::fs::write(&file, content).unwrap();
            for args in [&["check-config"][..], &["serve"][..]] {
                let o = Command::new(env!("CARGO_BIN_EXE_terrarium"))
                    .args(args)
                    .env_clear()
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .envs(env.iter().copied())
                    .current_dir(dir)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .unwrap();
                let text = out(&o);
                assert!(!o.status.success(), "{args:?} in {}: {text}", dir.display());
                assert!(
                    text.contains(&file.display().to_string()) && text.contains("--config"),
                    "{args:?}: the error names the file and the alternative: {text}"
                );
                assert!(
                    !text.contains("sandbox landlock: off"),
                    "the file was applied: {text}"
                );
            }
            std::fs::remove_file(&file).unwrap();
        }
    }
    // A `.env` in a parent directory inside the root (older versions searched parents).
    let parent_env = sb.root.join(".env");
    std::fs::write(&parent_env, hostile_env).unwrap();
    let o = terrarium(&env, &team, &["check-config"]);
    let text = out(&o);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains(&parent_env.display().to_string()), "{text}");
    std::fs::remove_file(&parent_env).unwrap();

    // An explicit file inside the root, even through a link from outside, is refused too.
    let inside = sb.root.join("settings.toml");
    std::fs::write(&inside, "sandbox = \"off\"\n").unwrap();
    let link = sb.dir.path().join("link.toml");
    std::os::unix::fs::symlink(&inside, &link).unwrap();
    for flag in ["--config", "--env-file"] {
        let o = terrarium(
            &env,
            sb.dir.path(),
            &[flag, link.to_str().unwrap(), "check-config"],
        );
        let text = out(&o);
        assert!(!o.status.success(), "{flag}: {text}");
        assert!(text.contains("workspace root"), "{flag}: {text}");
    }
}

/// `--env-file` and `--config` outside the root are read, and the environment still wins.
#[test]
fn explicit_config_and_env_files_are_read() {
    let sb = Sandbox::new(&["basic"]);
    let tf = terraform();
    let env_file = sb.dir.path().join("terrarium.env");
    std::fs::write(
        &env_file,
        format!(
            "TERRARIUM_WORKSPACE_ROOT={}\nTERRARIUM_STATE_DIR={}\nTERRARIUM_PLAN_TTL_SECS=22\nTERRARIUM_TIMEOUT_SECS=11\n",
            sb.root.display(),
            sb.state.display()
        ),
    )
    .unwrap();
    let toml = sb.dir.path().join("settings.toml");
    std::fs::write(&toml, "kill_grace_secs = 9\n").unwrap();
    let env = [
        ("TERRARIUM_TERRAFORM_BIN", tf.to_str().unwrap()),
        ("TERRARIUM_TIMEOUT_SECS", "44"),
    ];
    let o = terrarium(
        &env,
        std::path::Path::new("/"),
        &[
            "--env-file",
            env_file.to_str().unwrap(),
            "--config",
            toml.to_str().unwrap(),
            "check-config",
        ],
    );
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("TERRARIUM_PLAN_TTL_SECS=22"), "{text}");
    assert!(text.contains("TERRARIUM_TIMEOUT_SECS=44"), "{text}");
    assert!(text.contains("TERRARIUM_KILL_GRACE_SECS=9"), "{text}");
}
