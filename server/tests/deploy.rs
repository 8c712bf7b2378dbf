//! The Fly.io deployment kit without Fly: fly.toml checked against the Dockerfile and a
//! real server (ports, probes, metrics, the shutdown budget, the release command, the
//! settings it sets), and scripts/deploy-fly.sh run against a flyctl stand-in
//! (server/tests/fixtures/flyctl) that keeps an account in files: the dry run's exact
//! commands, a first deploy that creates everything and waits for a real server's
//! /readyz, a second that only updates, and the errors an operator meets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/image.rs"]
mod image;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::TestServer;
use courier_server::{MIGRATOR, SHUTDOWN_BUDGET};
use reqwest::StatusCode;
use sqlx::PgPool;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fly_toml() -> toml::Table {
    let path = repository().join("fly.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    text.parse()
        .unwrap_or_else(|error| panic!("fly.toml is not TOML: {error}"))
}

/// `table.key.key...`, or a panic naming the missing key.
fn at<'a>(table: &'a toml::Table, path: &str) -> &'a toml::Value {
    let mut keys = path.split('.');
    let first = keys.next().unwrap();
    let mut value = table
        .get(first)
        .unwrap_or_else(|| panic!("fly.toml has no {path}"));
    for key in keys {
        value = value
            .get(key)
            .unwrap_or_else(|| panic!("fly.toml has no {path}"));
    }
    value
}

fn str_at<'a>(table: &'a toml::Table, path: &str) -> &'a str {
    at(table, path)
        .as_str()
        .unwrap_or_else(|| panic!("fly.toml's {path} is not a string"))
}

fn int_at(table: &toml::Table, path: &str) -> i64 {
    at(table, path)
        .as_integer()
        .unwrap_or_else(|| panic!("fly.toml's {path} is not an integer"))
}

/// A fly.toml duration: seconds as an integer, or a string like "45s" or "2m".
fn duration_at(table: &toml::Table, path: &str) -> Duration {
    match at(table, path) {
        toml::Value::Integer(seconds) => Duration::from_secs(u64::try_from(*seconds).unwrap()),
        toml::Value::String(text) => {
            let (number, unit) = text.split_at(text.len() - 1);
            let number: u64 = number.parse().unwrap_or_else(|_| panic!("{path}: {text}"));
            match unit {
                "s" => Duration::from_secs(number),
                "m" => Duration::from_secs(number * 60),
                _ => panic!("{path}: unknown unit in {text}"),
            }
        }
        other => panic!("fly.toml's {path} is not a duration: {other}"),
    }
}

fn image_port(image: &image::ImageStart, name: &str) -> u16 {
    let address: std::net::SocketAddr = image
        .env(name)
        .unwrap_or_else(|| panic!("the Dockerfile sets no {name}"))
        .parse()
        .unwrap();
    address.port()
}

fn server_binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_courier-server"))
}

/// fly.toml routes to the port the image listens on, scrapes the port its private
/// listener has, checks a path a real server answers 200, gives the server's shutdown
/// budget room, never stops machines for idleness, migrates with a subcommand that
/// exists, and sets only settings the binary has, with values it takes.
#[sqlx::test(migrator = "MIGRATOR")]
async fn fly_toml_agrees_with_the_dockerfile_and_a_real_server(pool: PgPool) {
    let fly = fly_toml();
    let image = image::ImageStart::from_repository();

    // The build is the repository's Dockerfile.
    assert_eq!(str_at(&fly, "build.dockerfile"), "Dockerfile");

    // Ports: the public service on COURIER_LISTEN's port, metrics on the private one.
    let public_port = image_port(&image, "COURIER_LISTEN");
    let private_port = image_port(&image, "COURIER_ADMIN_LISTEN");
    assert_ne!(public_port, private_port);
    assert_eq!(
        int_at(&fly, "http_service.internal_port"),
        i64::from(public_port)
    );
    assert_eq!(int_at(&fly, "metrics.port"), i64::from(private_port));
    assert!(image.exposed.contains(&public_port), "{:?}", image.exposed);
    assert!(image.exposed.contains(&private_port), "{:?}", image.exposed);

    // What fly.toml points at, on a real server: the checks' paths answer 200 on the
    // public listener, the metrics path on the private one (and not on the public).
    let server = TestServer::start(pool).await;
    let checks = at(&fly, "http_service.checks").as_array().unwrap();
    assert!(!checks.is_empty(), "fly.toml has no http_service check");
    for check in checks {
        let method = check["method"].as_str().unwrap();
        assert!(method.eq_ignore_ascii_case("GET"), "{method}");
        let path = check["path"].as_str().unwrap();
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "check path {path}");
        // Fly marks a check failed after its timeout; it is longer than /readyz's own.
        let timeout = duration_at(check.as_table().unwrap(), "timeout");
        assert!(timeout > Duration::from_secs(2), "{timeout:?}");
    }
    let metrics_path = str_at(&fly, "metrics.path");
    let metrics = server
        .http
        .get(server.admin_url(metrics_path))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.text().await.unwrap().contains("courier_"));
    let public_metrics = server
        .http
        .get(server.url(metrics_path))
        .send()
        .await
        .unwrap();
    assert_eq!(public_metrics.status(), StatusCode::NOT_FOUND);

    // Shutdown: SIGTERM (the server's graceful signal), killed only after the budget.
    assert_eq!(str_at(&fly, "kill_signal"), "SIGTERM");
    let kill_timeout = duration_at(&fly, "kill_timeout");
    assert!(
        kill_timeout > SHUTDOWN_BUDGET,
        "kill_timeout {kill_timeout:?} is not above the shutdown budget {SHUTDOWN_BUDGET:?}"
    );

    // Machines are never stopped for idleness (retention and delivery run in them),
    // and at least one always runs.
    assert_eq!(str_at(&fly, "http_service.auto_stop_machines"), "off");
    assert!(int_at(&fly, "http_service.min_machines_running") >= 1);
    assert_eq!(at(&fly, "http_service.force_https").as_bool(), Some(true));

    // Concurrency by connections (a device holds a WebSocket), soft below hard.
    assert_eq!(str_at(&fly, "http_service.concurrency.type"), "connections");
    let soft = int_at(&fly, "http_service.concurrency.soft_limit");
    let hard = int_at(&fly, "http_service.concurrency.hard_limit");
    assert!(0 < soft && soft < hard, "soft {soft}, hard {hard}");

    // The release command is the image's entrypoint with a subcommand it has.
    let release = str_at(&fly, "deploy.release_command");
    assert_eq!(release, "courier-server migrate");
    let words: Vec<&str> = release.split_whitespace().collect();
    assert_eq!(words[0], image.entrypoint[0]);
    let help = server_binary()
        .args(&words[1..])
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success(), "{help:?}");
    assert!(duration_at(&fly, "deploy.release_command_timeout") > Duration::ZERO);

    // [env]: settings the binary lists (`--help` names each variable), no secrets (they
    // are Fly secrets), and nothing that undoes the image's no-migration start.
    let env: BTreeMap<String, String> = at(&fly, "env")
        .as_table()
        .unwrap()
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().unwrap().to_owned()))
        .collect();
    let help = server_binary().arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for name in env.keys() {
        assert!(
            help.contains(&format!("[env: {name}")),
            "fly.toml sets {name}, which is no setting of courier-server --help"
        );
        assert!(
            !name.contains("DATABASE_URL") && !name.contains("TOKEN"),
            "{name} is a secret: set it with fly secrets, not in fly.toml"
        );
    }
    assert!(!env.contains_key("COURIER_MIGRATE_ON_START"));
    assert_eq!(env["COURIER_CLIENT_IP_HEADER"], "Fly-Client-IP");

    // The values parse: the binary started with the image's environment and fly.toml's
    // (its address pointed at the test server) runs the image's health check and passes.
    let address = server.base.trim_start_matches("http://").to_owned();
    let health = tokio::task::spawn_blocking(move || {
        server_binary()
            .env_clear()
            .envs(image.env.iter().map(|(name, value)| (name, value)))
            .envs(&env)
            .env("COURIER_LISTEN", &address)
            .arg("healthcheck")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(health.status.success(), "{health:?}");
}

/// A Fly account for the flyctl stand-in, in a directory of its own.
struct Account {
    dir: PathBuf,
}

/// The password of the stand-in's clusters: it must never reach the script's output.
const DB_PASSWORD: &str = "pw-7f3a9c1e5b";

impl Account {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("courier-fly-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    /// Logged in, nothing else.
    fn logged_in() -> Self {
        let account = Self::new();
        account.write("logged-in", "operator@example.com\n");
        account
    }

    fn write(&self, name: &str, content: &str) {
        let path = self.dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name)).ok()
    }

    /// The stand-in's invocations, one line each.
    fn log(&self) -> Vec<String> {
        self.read("log")
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn secret(&self, app: &str, name: &str) -> Option<String> {
        self.read(&format!("secrets/{app}/{name}"))
    }

    /// Runs scripts/deploy-fly.sh with the stand-in first on PATH.
    async fn deploy(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let path = format!("{}:{}", fixtures.display(), std::env::var("PATH").unwrap());
        self.deploy_with_path(&path, args, env).await
    }

    async fn deploy_with_path(&self, path: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = Command::new("bash");
        command
            .arg(repository().join("scripts/deploy-fly.sh"))
            .args(args)
            .env("PATH", path)
            .env("FLYCTL_STANDIN_STATE", &self.dir)
            .env("FLYCTL_STANDIN_DB_PASSWORD", DB_PASSWORD)
            .env_remove("COURIER_ADMIN_TOKEN")
            // Unless a test points it at a server: a local port nothing listens on and a
            // short wait, so a script that wrongly gets that far fails in seconds and
            // never reaches the internet.
            .env("COURIER_DEPLOY_PUBLIC_URL", "http://127.0.0.1:1")
            .env("COURIER_DEPLOY_READY_TIMEOUT_SECS", "5")
            .current_dir(std::env::temp_dir());
        for (name, value) in env {
            command.env(name, value);
        }
        // Off the runtime's thread: the script waits for a server this runtime serves.
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        Run::from(output)
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a run of the script did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }
}

impl Run {
    /// The flyctl commands it printed, without the "+ ".
    fn commands(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter_map(|line| line.strip_prefix("+ "))
            .collect()
    }

    fn all_output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    fn assert_failed_with(&self, code: i32, message: &str) {
        assert_eq!(self.code, Some(code), "{self:#?}");
        assert!(self.stderr.contains(message), "{self:#?}");
    }
}

const APP: &str = "courier-test";

/// What a first deploy runs on a fresh account, in order (`ID` is the new cluster's).
fn first_deploy_commands(cluster: &str) -> Vec<String> {
    [
        "auth whoami".to_owned(),
        "apps list --json".to_owned(),
        format!("apps create {APP} --org personal"),
        "mpg list --org personal --json".to_owned(),
        format!("mpg create --name {APP}-db --org personal --region ams --plan basic"),
        "mpg list --org personal --json".to_owned(),
        format!("mpg attach {cluster} --app {APP} --variable-name COURIER_DATABASE_URL"),
        format!("mpg status {cluster} --json"),
        format!("secrets import --stage --app {APP}"),
        format!("deploy --app {APP} --config fly.toml --remote-only --primary-region ams"),
    ]
    .into()
}

/// `flyctl ...` lines, as the script prints them.
fn printed(commands: &[String]) -> Vec<String> {
    commands
        .iter()
        .map(|command| format!("flyctl {command}"))
        .collect()
}

#[tokio::test]
async fn a_dry_run_on_a_fresh_account_prints_every_command_and_runs_only_queries() {
    let account = Account::logged_in();
    // Empty: the script's default public URL (a dry run contacts nothing there).
    let run = account
        .deploy(
            &["--app", APP, "--dry-run"],
            &[("COURIER_DEPLOY_PUBLIC_URL", "")],
        )
        .await;
    assert_eq!(run.code, Some(0), "{run:#?}");

    let mut expected = printed(&first_deploy_commands(&format!(
        "<id of the new cluster {APP}-db>"
    )));
    // The staged secrets are named, their values not shown.
    expected[8] = format!(
        "flyctl secrets import --stage --app {APP} <<< COURIER_DATABASE_DIRECT_URL=<redacted> COURIER_ADMIN_TOKEN=<redacted>"
    );
    assert_eq!(run.commands(), expected, "{run:#?}");
    assert!(
        run.stdout
            .contains(&format!("https://{APP}.fly.dev/readyz"))
    );

    // Only the read-only queries ran; the account is as it was.
    assert_eq!(
        account.log(),
        [
            "auth whoami",
            "apps list --json",
            "mpg list --org personal --json"
        ]
    );
    assert_eq!(account.read(&format!("apps/{APP}")), None);
    assert_eq!(account.read(&format!("clusters/{APP}-db")), None);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_deploy_creates_the_app_and_database_waits_for_readyz_and_a_second_run_only_updates(
    pool: PgPool,
) {
    let server = TestServer::start(pool).await;
    let account = Account::logged_in();
    let env = [("COURIER_DEPLOY_PUBLIC_URL", server.base.as_str())];

    let run = account.deploy(&["--app", APP], &env).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let cluster = account.read(&format!("clusters/{APP}-db")).unwrap();
    let cluster = cluster.trim();
    let expected = first_deploy_commands(cluster);
    assert_eq!(account.log(), expected);
    let mut shown = printed(&expected);
    shown[8] = format!(
        "flyctl secrets import --stage --app {APP} <<< COURIER_DATABASE_DIRECT_URL=<redacted> COURIER_ADMIN_TOKEN=<redacted>"
    );
    assert_eq!(run.commands(), shown);
    assert_eq!(account.read(&format!("apps/{APP}")).unwrap(), "personal\n");

    // The secrets: the pooled URL from the attachment, the direct one on the cluster's
    // direct host, a fresh 256-bit admin token. None of them in the output.
    let pooled = account.secret(APP, "COURIER_DATABASE_URL").unwrap();
    assert_eq!(
        pooled,
        format!("postgresql://fly-user:{DB_PASSWORD}@pgbouncer.{cluster}.flympg.net/fly-db")
    );
    let direct = account.secret(APP, "COURIER_DATABASE_DIRECT_URL").unwrap();
    assert_eq!(
        direct,
        format!("postgresql://fly-user:{DB_PASSWORD}@direct.{cluster}.flympg.net/fly-db")
    );
    let token = account.secret(APP, "COURIER_ADMIN_TOKEN").unwrap();
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    let output = run.all_output();
    assert!(!output.contains(DB_PASSWORD), "{output}");
    assert!(!output.contains(&token), "{output}");

    // Deployed once, and it said where, after /readyz answered.
    assert_eq!(
        account
            .read(&format!("deploys/{APP}"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    assert!(
        run.stdout
            .contains(&format!("Courier is up: {}", server.base)),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("printenv COURIER_ADMIN_TOKEN"),
        "{run:#?}"
    );

    // Again: everything is found, nothing is created, attached or set; it deploys.
    let second = account.deploy(&["--app", APP], &env).await;
    assert_eq!(second.code, Some(0), "{second:#?}");
    let log = account.log();
    assert_eq!(
        log[expected.len()..],
        [
            "auth whoami".to_owned(),
            "apps list --json".to_owned(),
            format!("secrets list --app {APP} --json"),
            "mpg list --org personal --json".to_owned(),
            format!("deploy --app {APP} --config fly.toml --remote-only --primary-region ams"),
        ]
    );
    assert_eq!(
        account.secret(APP, "COURIER_ADMIN_TOKEN").unwrap(),
        token,
        "the admin token was replaced"
    );
    assert_eq!(
        account
            .read(&format!("deploys/{APP}"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    assert!(second.stdout.contains("Courier is up"), "{second:#?}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn given_database_urls_and_admin_token_are_set_without_managed_postgres(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let account = Account::logged_in();
    account.write(&format!("apps/{APP}"), "personal\n");
    let pooled = "postgres://courier:pooled-secret@db.example:6432/courier?sslmode=require";
    let direct = "postgres://courier:direct-secret@db.example:5432/courier?sslmode=require";
    let token = "a-token-the-operator-chose-0123456789";
    let run = account
        .deploy(
            &[
                "--app",
                APP,
                "--region",
                "fra",
                "--database-url",
                pooled,
                "--database-direct-url",
                direct,
            ],
            &[
                ("COURIER_DEPLOY_PUBLIC_URL", &server.base),
                ("COURIER_ADMIN_TOKEN", token),
            ],
        )
        .await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        account.log(),
        [
            "auth whoami".to_owned(),
            "apps list --json".to_owned(),
            format!("secrets list --app {APP} --json"),
            format!("secrets import --stage --app {APP}"),
            format!("deploy --app {APP} --config fly.toml --remote-only --primary-region fra"),
        ]
    );
    assert_eq!(account.secret(APP, "COURIER_DATABASE_URL").unwrap(), pooled);
    assert_eq!(
        account.secret(APP, "COURIER_DATABASE_DIRECT_URL").unwrap(),
        direct
    );
    assert_eq!(account.secret(APP, "COURIER_ADMIN_TOKEN").unwrap(), token);
    let output = run.all_output();
    for secret in ["pooled-secret", "direct-secret", token] {
        assert!(!output.contains(secret), "{output}");
    }
}

#[tokio::test]
async fn without_flyctl_it_says_how_to_install_it() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let path: Vec<PathBuf> = std::env::split_paths(&std::env::var("PATH").unwrap())
        .filter(|dir| *dir != fixtures)
        .collect();
    for dir in &path {
        for name in ["flyctl", "fly"] {
            assert!(
                !dir.join(name).exists(),
                "{} exists: this test needs a PATH without flyctl",
                dir.join(name).display()
            );
        }
    }
    let path = std::env::join_paths(path).unwrap();
    let account = Account::logged_in();
    let run = account
        .deploy_with_path(path.to_str().unwrap(), &["--app", APP], &[])
        .await;
    run.assert_failed_with(1, "flyctl is not installed");
    assert!(run.stderr.contains("https://fly.io/install.sh"), "{run:#?}");
    assert!(run.stderr.contains("flyctl auth login"), "{run:#?}");
    assert!(account.log().is_empty());
}

#[tokio::test]
async fn not_logged_in_it_says_to_log_in() {
    let account = Account::new();
    let run = account.deploy(&["--app", APP], &[]).await;
    run.assert_failed_with(1, "not logged in to Fly.io");
    assert!(run.stderr.contains("flyctl auth login"), "{run:#?}");
    assert_eq!(account.log(), ["auth whoami"]);
}

#[tokio::test]
async fn an_app_name_taken_by_another_account_is_a_clear_error() {
    let account = Account::logged_in();
    account.write("taken-apps", &format!("{APP}\n"));
    let run = account.deploy(&["--app", APP], &[]).await;
    run.assert_failed_with(
        1,
        &format!("the app name '{APP}' is taken by another Fly.io account"),
    );
    // flyctl's own words, too.
    assert!(
        run.stderr.contains("Name has already been taken"),
        "{run:#?}"
    );
    assert_eq!(
        account.log(),
        [
            "auth whoami".to_owned(),
            "apps list --json".to_owned(),
            format!("apps create {APP} --org personal"),
        ]
    );
}

#[tokio::test]
async fn a_database_that_cannot_be_attached_stops_before_the_deploy() {
    let account = Account::logged_in();
    account.write(
        "fail-mpg-attach",
        "failed to create attachment: organization mismatch",
    );
    let run = account.deploy(&["--app", APP], &[]).await;
    run.assert_failed_with(
        1,
        &format!("cannot attach the Managed Postgres cluster {APP}-db"),
    );
    assert!(run.stderr.contains("organization mismatch"), "{run:#?}");
    assert!(!run.all_output().contains(DB_PASSWORD), "{run:#?}");
    let log = account.log();
    assert!(log.last().unwrap().starts_with("mpg attach "), "{log:?}");
    assert!(
        !log.iter().any(|line| line.starts_with("deploy")),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_database_that_cannot_be_created_stops_before_the_deploy() {
    let account = Account::logged_in();
    account.write(
        "fail-mpg-create",
        "region xyz is not available for Managed Postgres",
    );
    let run = account
        .deploy(&["--app", APP, "--region", "xyz"], &[])
        .await;
    run.assert_failed_with(
        1,
        &format!("cannot create the Managed Postgres cluster {APP}-db in xyz"),
    );
    assert!(run.stderr.contains("is not available"), "{run:#?}");
    let log = account.log();
    assert!(log.last().unwrap().starts_with("mpg create "), "{log:?}");
}

#[tokio::test]
async fn a_server_that_never_gets_ready_is_an_error_that_points_at_the_logs() {
    let account = Account::logged_in();
    // A port nothing listens on, and no time to wait: one check, then the verdict.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let run = account
        .deploy(
            &["--app", APP],
            &[
                ("COURIER_DEPLOY_PUBLIC_URL", &url),
                ("COURIER_DEPLOY_READY_TIMEOUT_SECS", "0"),
            ],
        )
        .await;
    run.assert_failed_with(1, &format!("{url}/readyz did not answer 200"));
    assert!(
        run.stderr.contains(&format!("flyctl logs --app {APP}")),
        "{run:#?}"
    );
}

#[tokio::test]
async fn a_short_admin_token_is_refused_before_any_flyctl() {
    let account = Account::logged_in();
    let run = account
        .deploy(&["--app", APP], &[("COURIER_ADMIN_TOKEN", "too-short")])
        .await;
    run.assert_failed_with(1, "COURIER_ADMIN_TOKEN must be at least 32 characters");
    assert!(!run.all_output().contains("too-short"), "{run:#?}");
    assert!(account.log().is_empty(), "{:?}", account.log());
}

#[tokio::test]
async fn bad_arguments_print_the_usage_and_exit_2_before_any_flyctl() {
    let account = Account::logged_in();
    for (args, message) in [
        (&["--app", APP, "--bogus"][..], "unknown argument: --bogus"),
        (&[][..], "--app is required"),
        (&["--app"][..], "--app needs a value"),
        (&["--app", "Not_Valid"][..], "only lowercase letters"),
        (
            &[
                "--app",
                APP,
                "--database",
                "db",
                "--database-url",
                "postgres://x",
            ][..],
            "exclude each other",
        ),
        (
            &["--app", APP, "--database-direct-url", "postgres://x"][..],
            "needs --database-url",
        ),
    ] {
        let run = account.deploy(args, &[]).await;
        run.assert_failed_with(2, message);
        assert!(
            run.stderr.contains("usage: scripts/deploy-fly.sh"),
            "{run:#?}"
        );
    }
    assert!(account.log().is_empty(), "{:?}", account.log());
    let help = account.deploy(&["--help"], &[]).await;
    assert_eq!(help.code, Some(0));
    assert!(help.stdout.contains("usage: scripts/deploy-fly.sh"));
}
