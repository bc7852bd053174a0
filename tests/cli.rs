//! The command line as a user meets it: `check` output and exit codes,
//! `run` with SIGHUP reload and SIGTERM shutdown.

mod support;

use std::path::Path;

use http::{Request, StatusCode};
use support::*;

const ID: &str = "ABABABABQQIRZ";
const SECRET: &str = "k9H2Nd3T5j5EW2Fu160l11Hal3x3oa";

fn seed_env(dir: &str) -> Vec<(&str, &str)> {
    vec![
        ("COPILOT_CLIENT_ID", ID),
        ("COPILOT_CLIENT_SECRET", SECRET),
        (
            "KOUPON_API_KEY",
            "6348256714038520009a57d1d2-5188-457b-854b-86aafea65fc5",
        ),
        ("KOUPON_SECRET_KEY", "4623B7B8-18A6-4B2C-B2C1-18157F5C4AFE"),
        ("COPERNICA_CLIENT_KEY", "copernica-client-key"),
        ("COPERNICA_CLIENT_SECRET", "copernica-client-secret-value"),
        ("COPERNICA_TOKEN_STORE", dir),
        ("INVOCA_NETWORK_ID", "42"),
        ("INVOCA_ADVERTISER_ID", "354"),
        ("INVOCA_EMAIL_URLENCODED", "sy%40young.com"),
        ("INVOCA_USERNAME", "invoca-user"),
        ("INVOCA_PASSWORD", "invoca-password-value"),
        ("ALGONOMY_API_HOST", "b2b.algonomy.example"),
        ("ALGONOMY_TENANT_HASH", "abcd1234efgh5678ijkl9012mnop3456"),
        ("ALGONOMY_OAUTH_KEY_SECRET", "4faeaf752ee40a0f"),
    ]
}

const SECRETS: [&str; 7] = [
    SECRET,
    "4623B7B8-18A6-4B2C-B2C1-18157F5C4AFE",
    "6348256714038520009a57d1d2",
    "copernica-client-secret-value",
    "invoca-password-value",
    "4faeaf752ee40a0f",
    // base64("ABABABABQQIRZ:k9H2...")
    "QUJBQkFCQUJRUUlSWjprOUgyTmQzVDVqNUVXMkZ1MTYwbDExSGFsM3gzb2E=",
];

fn seed_config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples/seed-routes.toml")
        .display()
        .to_string()
}

#[test]
fn check_accepts_the_seed_routes_and_prints_no_secret() {
    let env = TestEnv::new();
    let store = env.dir().join("copernica.token").display().to_string();
    let (status, stdout, _) = run_cli(&["check", "--config", &seed_config()], &seed_env(&store));
    assert!(status.success(), "check failed:\n{stdout}");
    for route in ["copilot", "koupon", "copernica", "invoca", "algonomy"] {
        assert!(
            stdout.contains(&format!("route \"{route}\"")),
            "{route} missing:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("warning: route \"copernica\": auth.token.store"),
        "a store not yet written is a warning:\n{stdout}"
    );
    assert!(stdout.trim_end().ends_with("valid"), "{stdout}");
    for secret in SECRETS {
        assert!(
            !stdout.contains(secret),
            "check printed a secret:\n{stdout}"
        );
    }
}

#[test]
fn check_lists_every_problem_and_exits_1() {
    let env = TestEnv::new();
    let store = env.dir().join("copernica.token").display().to_string();
    let vars: Vec<_> = seed_env(&store)
        .into_iter()
        .filter(|(k, _)| *k != "COPILOT_CLIENT_SECRET" && *k != "INVOCA_NETWORK_ID")
        .collect();
    let (status, stdout, _) = run_cli(&["check", "--config", &seed_config()], &vars);
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(
        "error: route \"copilot\": auth.password: environment variable COPILOT_CLIENT_SECRET is not set"
    ), "{stdout}");
    assert!(stdout.contains("error: route \"invoca\": auth.token.url: environment variable INVOCA_NETWORK_ID is not set"), "{stdout}");
    for secret in SECRETS {
        assert!(
            !stdout.contains(secret),
            "check printed a secret:\n{stdout}"
        );
    }
}

#[test]
fn check_reports_syntax_errors_with_a_position() {
    let env = TestEnv::new();
    let path = env
        .write_config("[proxy]\nlisten = \"127.0.0.1:0\"\n[[route]]\nname = \"a\"\nhots = \"x\"\n");
    let (status, stdout, _) = run_cli(&["check", "--config", &path.display().to_string()], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stdout.contains("line 5") && stdout.contains("hots"),
        "{stdout}"
    );
}

#[test]
fn config_defaults_to_sidekey_config_env() {
    let env = TestEnv::new();
    let path = env.write_config("[proxy]\nlisten = \"127.0.0.1:0\"\n");
    let (status, stdout, _) = run_cli(
        &["check"],
        &[("SIDEKEY_CONFIG", &path.display().to_string())],
    );
    assert!(status.success(), "{stdout}");
    assert!(stdout.contains(&path.display().to_string()), "{stdout}");
}

#[test]
fn config_defaults_to_sidekey_toml_in_the_working_directory() {
    let env = TestEnv::new();
    env.write_config("[proxy]\nlisten = \"127.0.0.1:0\"\n");
    let out = std::process::Command::new(sidekey_bin())
        .arg("check")
        .current_dir(env.dir())
        .env_clear()
        .output()
        .expect("run the sidekey binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("sidekey.toml: "), "{stdout}");
}

#[test]
fn sigint_stops_as_cleanly_as_sigterm() {
    let env = TestEnv::new();
    let path = env.write_config("[proxy]\nlisten = \"127.0.0.1:0\"\n");
    let sidekey = SidekeyProcess::spawn(&path, &[], &[]);
    let (status, output) = sidekey.stop_with("INT");
    assert!(
        status.success(),
        "SIGINT is a clean stop: {status:?}\n{output}"
    );
    assert!(output.contains("stopped"), "{output}");
}

fn copilot_config(env: &TestEnv, copilot: &CopilotApi, password_var: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
ca_file = {ca}
[proxy.connect_to]
{to}
[[route]]
name = "copilot"
host = "api.copilot.cx"
[route.headers]
"Content-Type" = "application/json"
[route.auth]
kind = "basic"
username = "${{COPILOT_CLIENT_ID}}"
password = "${{{password_var}}}"
"#,
        ca = toml_str(&env.ca_file().display().to_string()),
        to = copilot.connect_to_toml(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_an_invalid_config_keeps_the_old_one() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, ID, SECRET);
    let vars = [
        ("COPILOT_CLIENT_ID", ID),
        ("WRONG_SECRET", "not-the-secret"),
        ("COPILOT_CLIENT_SECRET", SECRET),
    ];
    // Start with the wrong password: the API rejects it.
    let path = env.write_config(&copilot_config(&env, &copilot, "WRONG_SECRET"));
    let mut sidekey = SidekeyProcess::spawn(&path, &vars, &[]);
    let url = "http://api.copilot.cx/v1/users";
    let resp = get(sidekey.proxy_addr, url).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Fix it and reload.
    env.write_config(&copilot_config(&env, &copilot, "COPILOT_CLIENT_SECRET"));
    sidekey.signal("HUP");
    sidekey.wait_for_line("config reloaded");
    let resp = get(sidekey.proxy_addr, url).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", body_text(&resp));

    // A broken config is refused; the running one keeps serving.
    env.write_config(&copilot_config(&env, &copilot, "UNSET_VARIABLE"));
    sidekey.signal("HUP");
    let line = sidekey.wait_for_line("config reload failed");
    assert!(line.contains("UNSET_VARIABLE"), "{line}");
    let resp = send(
        sidekey.proxy_addr,
        Request::post(url).body(full_body("{}")).expect("request"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let admin = sidekey.admin_addr.expect("the admin listener");
    let metrics = body_text(&get(admin, "/metrics").await);
    for series in [
        "sidekey_config_reloads_total{outcome=\"ok\"} 1",
        "sidekey_config_reloads_total{outcome=\"invalid\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == series), "{series}:\n{metrics}");
    }

    let (status, output) = sidekey.stop();
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {status:?}\n{output}"
    );
    assert!(output.contains("stopped"), "{output}");
    assert!(!output.contains(SECRET), "a secret was logged:\n{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_when_the_file_changes() {
    let env = TestEnv::new();
    let copilot = CopilotApi::spawn(&env.ca, ID, SECRET);
    let vars = [
        ("COPILOT_CLIENT_ID", ID),
        ("WRONG_SECRET", "not-the-secret"),
        ("COPILOT_CLIENT_SECRET", SECRET),
    ];
    let path = env.write_config(&copilot_config(&env, &copilot, "WRONG_SECRET"));
    let mut sidekey = SidekeyProcess::spawn(&path, &vars, &["--watch"]);
    let url = "http://api.copilot.cx/v1/users";
    assert_eq!(
        get(sidekey.proxy_addr, url).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A different length guarantees a different stamp even within one
    // mtime tick.
    let fixed = copilot_config(&env, &copilot, "COPILOT_CLIENT_SECRET") + "\n# fixed\n";
    env.write_config(&fixed);
    sidekey.wait_for_line("config reloaded");
    assert_eq!(get(sidekey.proxy_addr, url).await.status(), StatusCode::OK);
}

#[test]
fn run_with_a_missing_config_file_names_the_cause_once() {
    let env = TestEnv::new();
    let missing = env.dir().join("nowhere.toml");
    let (status, _, stderr) = run_cli(&["run", "--config", &missing.display().to_string()], &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nowhere.toml"), "{stderr}");
    // The OS's words for the cause, exactly once.
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}
