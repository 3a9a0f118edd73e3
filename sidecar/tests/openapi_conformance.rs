//! The admin API against its own OpenAPI document, by schemathesis (from PyPI, installed by
//! `make test` with scripts/ensure-schemathesis): the built relay with a real redis-server,
//! dead letters and due events stored, a breaker and a rate limit set (so every schema has
//! data); schemathesis generates requests from `/v1/openapi.json` and checks that no answer
//! is a 5xx and that every status, content type and body is the documented one.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use testkit::downstream::*;
use testkit::relay::*;
use testkit::wait::eventually;
use testkit::{RedisServer, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_answer_matches_the_openapi_document() {
    let bin = testkit::process::root().join("target/tools/schemathesis/bin/schemathesis");
    assert!(bin.is_file(), "{} is missing: run scripts/ensure-schemathesis (make test does)", bin.display());
    let redis = RedisServer::start();
    let script: Script = Arc::new(|id, _| if id.starts_with("bad") { (422, None) } else { (503, None) });
    let ds = Downstream::start(script, Duration::ZERO).await;
    let (l, a) = (free_port(), free_port());
    let delivery = "  maxAttempts: 3\n  initialDelay: 1h\n  maxDelay: 2h\n  \
                    rateLimit: { perSecond: 50, burst: 10 }\n  circuitBreaker: { failureThreshold: 100, openFor: 1s }";
    let relay = RelayProcess::start(&config("t/openapi", l, a, &ds.url, delivery), &redis.url(), l, a);
    let client = reqwest::Client::new();
    for id in ["bad-1", "bad-2", "bad-3", "later-1", "later-2"] {
        assert_eq!(send(&client, &relay.intake, id).await.unwrap().0, 200);
    }
    let s = store(&redis.url(), "t/openapi").await;
    let stored = eventually(Duration::from_secs(10), || async {
        let st = s.stats().await.unwrap();
        st.dead == 3 && st.due == 2
    })
    .await;
    assert!(stored, "{:?}", s.stats().await.unwrap());

    // schemathesis keeps a cache (`.schemathesis/`) in its working directory: not in the tree.
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(&bin)
        .current_dir(work.path())
        .args(["run", &format!("{}/v1/openapi.json", relay.admin)])
        .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "40", "--workers", "1", "--seed", "20261201"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" generated, ") || l.contains("issues found") || l.contains("failure"))
        .collect();
    println!("schemathesis: {}", summary.join(" | "));
    assert!(
        out.status.success(),
        "schemathesis found answers that do not match the document:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("generated"), "{text}");
    let st = s.stats().await.unwrap();
    println!("after the run: due {}, dead {} (schemathesis replays and deletes too)", st.due, st.dead);
}
