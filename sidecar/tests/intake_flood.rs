//! Unauthenticated floods cannot exhaust the relay's memory: the built binary under 400
//! concurrent ~1 MB bodies with forged signatures, its peak RSS read from /proc.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testkit::RedisServer;
use testkit::downstream::*;
use testkit::relay::*;
use testkit::wait::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

/// Sends one request with a forged signature and a body of `len` bytes (chunked when `declared`
/// is false); returns the status code, or 0 if the connection failed.
async fn forged(port: u16, len: usize, declared: bool) -> u16 {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return 0 };
    let head = if declared {
        format!(
            "POST /webhooks/genesys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             X-Hub-Signature-256: sha256=Zm9yZ2Vk\r\nContent-Length: {len}\r\n\r\n"
        )
    } else {
        "POST /webhooks/genesys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         X-Hub-Signature-256: sha256=Zm9yZ2Vk\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_string()
    };
    if s.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        let ok = if declared {
            s.write_all(&chunk[..n]).await
        } else {
            let mut framed = format!("{n:x}\r\n").into_bytes();
            framed.extend_from_slice(&chunk[..n]);
            framed.extend_from_slice(b"\r\n");
            s.write_all(&framed).await
        };
        if ok.is_err() {
            break; // refused early: the relay answered and closed
        }
        sent += n;
    }
    if !declared && sent >= len {
        let _ = s.write_all(b"0\r\n\r\n").await;
    }
    let mut buf = vec![0u8; 4096];
    let n =
        tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await.ok().and_then(|r| r.ok()).unwrap_or(0);
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|t| t.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_megabyte_floods_keep_memory_bounded_and_lose_nothing() {
    let redis = RedisServer::start();
    let ds = Downstream::start(Arc::new(|_, _| (200, None)), Duration::ZERO).await;
    let relay = RelayProcess::start_fresh("t/flood", &redis.url(), &ds.url, "  maxAttempts: 5");
    let pid = relay.pid();
    let before = testkit::rss_bytes(pid);
    let client = reqwest::Client::new();

    let counts: Arc<[AtomicUsize; 4]> = Arc::new(Default::default()); // 401, 503, 413/other, failed
    let started = Instant::now();
    let mut tasks = vec![];
    for i in 0..400 {
        let (port, counts) = (relay.listen_port, counts.clone());
        tasks.push(tokio::spawn(async move {
            // Mostly declared lengths, some chunked (no Content-Length: checked while reading).
            let code = forged(port, 1_000_000, i % 4 != 0).await;
            let slot = match code {
                401 => 0,
                503 => 1,
                0 => 3,
                _ => 2,
            };
            counts[slot].fetch_add(1, Ordering::Relaxed);
        }));
    }
    // A valid event in the middle of the flood: 200, or 503 and then 200 on a retry; never lost.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut valid = vec![];
    loop {
        let (status, body) = send(&client, &relay.intake, "valid-during-flood").await.unwrap();
        valid.push(status);
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(started.elapsed() < Duration::from_secs(60), "never accepted: {valid:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let peak = testkit::peak_rss_bytes(pid);
    let c: Vec<usize> = counts.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    println!(
        "flood: 400 forged ~1 MB bodies in {:.1}s: {} answered 401, {} answered 503, {} other, {} cut off; \
         relay RSS {:.1} MiB before, peak {:.1} MiB; the valid event was answered {valid:?}",
        took.as_secs_f64(),
        c[0],
        c[1],
        c[2],
        c[3],
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64,
    );
    assert!(peak < 160 * MIB, "peak RSS {} MiB", peak / MIB);
    assert_eq!(c[2], 0, "no forged body may get anything but 401 or 503");
    assert!(c[0] > 0 && c[1] > 0, "some were verified and refused, some refused before reading: {c:?}");
    let delivered =
        eventually(Duration::from_secs(20), || async { ds.delivered().contains_key("valid-during-flood") }).await;
    assert!(delivered, "the valid event was lost; log:\n{}", relay.log_text());
    // Normal service after.
    for i in 0..20 {
        assert_eq!(send(&client, &relay.intake, &format!("after-{i}")).await.unwrap().0, 200);
    }
    assert!(eventually(Duration::from_secs(20), || async { ds.delivered().len() == 21 }).await);
    let m = client.get(format!("{}/metrics", relay.admin)).send().await.unwrap().text().await.unwrap();
    let full = m
        .lines()
        .find_map(|l| l.strip_prefix(r#"webhook_relay_intake_requests_total{outcome="buffers_full"} "#))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(full > 0, "the refusals are counted as buffers_full:\n{m}");
}
