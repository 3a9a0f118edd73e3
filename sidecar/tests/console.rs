//! The dead-letter console (`/ui/`): served by the admin router without the token while the
//! API stays behind it (in process), and driven in Debian's headless Chromium by
//! tests/console/console.mjs (playwright-core) against the built relay, a real redis-server
//! and a downstream that fails, so dead letters are there to list, show, replay and delete.
//! Chromium and playwright-core come from scripts/ensure-chromium (make test runs it); the
//! screenshots of the run go to target/console-screenshots/ (the README's come from there).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::RedisServer;
use testkit::downstream::*;
use testkit::relay::*;
use testkit::wait::eventually;
use tower::ServiceExt;
use webhook_relay_api::RelayConfig;
use webhook_relay_sidecar::run_config::RunConfig;
use webhook_relay_sidecar::{admin, app, console};

/// How long the browser script may run before it is killed with its browser.
const BROWSER_LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_public_and_the_api_behind_it_is_not() {
    let redis = RedisServer::start();
    let yaml =
        "relay: t/console-routes\nsource:\n  verify: {scheme: none}\ndestination:\n  url: http://127.0.0.1:9/events\n";
    let env: HashMap<&str, String> = [("REDIS_URL", redis.url()), ("RELAY_ADMIN_TOKEN", "tok".to_string())].into();
    let run_config = RunConfig::from_config(RelayConfig::from_yaml(yaml).unwrap(), |k| env.get(k).cloned()).unwrap();
    let app = admin::router(app::build(run_config).await.unwrap());
    let get = |uri: &'static str| {
        let app = app.clone();
        async move { app.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap() }
    };
    for uri in ["/ui/", "/ui/console.js", "/ui/console.css"] {
        let r = get(uri).await;
        assert_eq!(r.status(), StatusCode::OK, "{uri} without a token");
        assert_eq!(r.headers()["content-security-policy"], console::CONTENT_SECURITY_POLICY, "{uri}");
    }
    assert_eq!(get("/ui").await.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(get("/ui/nothing").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get("/v1/stats").await.status(), StatusCode::UNAUTHORIZED, "the data stays behind the token");
    assert!(
        !get("/v1/stats").await.headers().contains_key("content-security-policy"),
        "only /ui gets the page's policy"
    );
}

/// Fails with what to run when the browser or playwright-core is missing: never skips.
fn browser_tools() -> (std::path::PathBuf, &'static str) {
    let modules = testkit::process::root().join("target/tools/console-test");
    let chromium = "/usr/bin/chromium";
    assert!(
        Path::new(chromium).is_file(),
        "{chromium} is missing: run scripts/ensure-chromium (make test does; it installs Debian's chromium package)"
    );
    assert!(
        modules.join("node_modules/playwright-core/package.json").is_file(),
        "{} has no playwright-core: run scripts/ensure-chromium (make test does)",
        modules.display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(node.is_ok_and(|o| o.status.success()), "node is missing: apt-get install -y nodejs npm");
    (modules, chromium)
}

/// Runs `cmd` in a process group of its own, killing the whole group (node and its browser)
/// after `limit` and again once it exited, so no browser process outlives the test.
fn run_group(mut cmd: Command, out: &Path, limit: Duration) -> (Option<std::process::ExitStatus>, String) {
    let file = std::fs::File::create(out).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .process_group(0)
        .spawn()
        .expect("spawn node");
    let group = format!("-{}", child.id());
    let kill_group = || drop(Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            kill_group();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    kill_group();
    (status, std::fs::read_to_string(out).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lists_shows_replays_and_deletes_dead_letters_in_chromium() {
    let (modules, chromium) = browser_tools();
    let redis = RedisServer::start();
    // gw-*: 503 on the first two attempts (maxAttempts 2: dead), delivered after a replay;
    // nf-*: 404, dead at once.
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let script: Script = Arc::new(move |id, _| {
        let mut seen = seen.lock().unwrap();
        let n = seen.entry(id.to_string()).or_default();
        *n += 1;
        match id {
            _ if id.starts_with("nf-") => (404, None),
            _ if *n <= 2 => (503, None),
            _ => (200, None),
        }
    });
    let ds = Downstream::start(script, Duration::ZERO).await;
    let relay = RelayProcess::start_fresh(
        "t/console",
        &redis.url(),
        &ds.url,
        "  maxAttempts: 2\n  initialDelay: 10ms\n  maxDelay: 50ms",
    );
    let client = reqwest::Client::new();
    let ids = ["gw-0", "gw-1", "gw-2", "gw-3", "nf-0", "nf-1", "nf-2"];
    for id in ids {
        assert_eq!(send(&client, &relay.intake, id).await.unwrap().0, 200);
    }
    let s = store(&redis.url(), "t/console").await;
    let settled = eventually(Duration::from_secs(20), || async {
        let st = s.stats().await.unwrap();
        st.dead == 7 && st.due == 0 && st.in_flight == 0
    })
    .await;
    assert!(settled, "{:?}", s.stats().await.unwrap());

    let scenario = json!({
        "dead": 7,
        "ids": ids,
        "show": "gw-1",
        "showStatus": 503,
        "showText": "\"messageId\": \"gw-1\"",
        "replay": "gw-0",
        "remove": "nf-0",
        "filter": { "status": "5xx" },
        "filterCount": 3,
    });
    let root = testkit::process::root();
    let shots = root.join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let mut cmd = Command::new("node");
    cmd.arg(root.join("tests/console/console.mjs"))
        .env("CONSOLE_URL", &relay.admin)
        .env("CONSOLE_TOKEN", ADMIN_TOKEN)
        .env("CONSOLE_SCENARIO", scenario.to_string())
        .env("CONSOLE_MODULES", &modules)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", chromium)
        // The page and the script agree on local time for the "dead since" field.
        .env("TZ", "UTC");
    let log = tempfile::NamedTempFile::new().unwrap();
    let out_path = log.path().to_path_buf();
    let (status, out) = tokio::task::spawn_blocking(move || run_group(cmd, &out_path, BROWSER_LIMIT)).await.unwrap();
    println!("{out}");
    let status = status.unwrap_or_else(|| panic!("the browser test ran longer than {BROWSER_LIMIT:?}:\n{out}"));
    assert!(status.success(), "the browser test failed ({status}):\n{out}\nrelay log:\n{}", relay.log_text());
    assert!(out.contains("console test: all checks passed"), "{out}");
    for must in ["ok: the token left the address bar", "ok: no dead-letter rows with a wrong token"] {
        assert!(out.contains(must), "missing {must:?} in\n{out}");
    }

    // What the page did, seen through the API.
    let event = |id: &'static str| {
        let client = client.clone();
        let url = format!("{}/v1/events/{id}", relay.admin);
        async move {
            let r = client.get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let delivered = eventually(Duration::from_secs(10), || async {
        ["gw-0", "gw-1", "gw-2", "gw-3"].iter().all(|id| ds.delivered().contains_key(*id))
    })
    .await;
    assert!(delivered, "replayed from the page but not delivered: {:?}", ds.delivered());
    assert_eq!(event("gw-0").await.0, 404, "delivered after the replay, so gone");
    assert_eq!(event("nf-0").await.0, 404, "deleted from the page");
    let (code, kept) = event("nf-1").await;
    assert_eq!((code, kept["state"].as_str()), (200, Some("dead")), "{kept}");
    let stats: Value = client
        .get(format!("{}/v1/stats", relay.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["dead"], 2, "{stats}");
    for name in ["console-overview.png", "console-event.png", "console-replay-dry-run.png", "console-wrong-token.png"] {
        let png = std::fs::read(shots.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{name} is not a screenshot");
    }
    println!("console: screenshots in {}", shots.display());
}
