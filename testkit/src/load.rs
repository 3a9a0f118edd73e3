//! A steady stream of signed webhooks for the disruption tests: a few senders at a fixed
//! total rate, each event with its own id, every answer recorded (status, or that the
//! request failed), so a test can count what was acknowledged, refused and lost.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the load goes: `url`, with its host resolved to `connect` when set (an Ingress
/// host name served by the controller's address, as DNS would answer).
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub connect: Option<SocketAddr>,
}

impl Target {
    /// `http://<addr>/webhooks/genesys` (a pod IP, a Service's ClusterIP).
    pub fn direct(addr: SocketAddr) -> Self {
        Target { url: format!("http://{addr}/webhooks/genesys"), connect: None }
    }
}

/// One request and its answer: `status` is `None` when no HTTP answer came (connection
/// refused or reset, timeout).
#[derive(Clone, Debug)]
pub struct Outcome {
    pub id: String,
    pub status: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// A running load; [`stop`](Load::stop) ends it and returns what happened.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Starts `senders` senders that together send about `per_second` events a second to
    /// `target` (targets may change while it runs: one sender per target, round robin),
    /// signed with `secret`, ids `<prefix>-<n>`. Each request may take up to 10 s.
    pub fn start(targets: Vec<Target>, secret: &str, prefix: &str, senders: usize, per_second: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let (s, n, o) = (stop.clone(), sent.clone(), outcomes.clone());
        let (secret, prefix) = (secret.to_string(), prefix.to_string());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let every = Duration::from_secs_f64(senders as f64 / per_second.max(1) as f64);
                let mut tasks = Vec::new();
                for sender in 0..senders {
                    let target = targets[sender % targets.len()].clone();
                    let mut client = reqwest::Client::builder().timeout(Duration::from_secs(10));
                    if let Some(addr) = target.connect {
                        let host = url::Url::parse(&target.url).unwrap().host_str().unwrap().to_string();
                        client = client.resolve(&host, addr);
                    }
                    let client = client.build().unwrap();
                    let (s, n, o, secret, prefix) = (s.clone(), n.clone(), o.clone(), secret.clone(), prefix.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut tick = tokio::time::interval(every);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        while !s.load(Ordering::Relaxed) {
                            tick.tick().await;
                            let id = format!("{prefix}-{}", n.fetch_add(1, Ordering::Relaxed));
                            let body = crate::relay::event_body(&id);
                            let sig = webhook_relay_util::signature::sign_genesys(secret.as_bytes(), body.as_bytes());
                            let r = client
                                .post(&target.url)
                                .header("content-type", "application/json")
                                .header(webhook_relay_util::signature::GENESYS_HEADER, sig)
                                .body(body)
                                .send()
                                .await;
                            let (status, error) = match r {
                                Ok(r) => (Some(r.status().as_u16()), None),
                                Err(e) => (None, Some(webhook_relay_util::error_chain(&e))),
                            };
                            o.lock().unwrap().push(Outcome { id, status, error });
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        });
        Load { stop, sent, outcomes, thread: Some(thread) }
    }

    /// Events sent so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Events answered so far.
    pub fn answered(&self) -> usize {
        self.outcomes.lock().unwrap().len()
    }

    /// Stops sending, waits for the answers in flight, and returns every outcome.
    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        LoadReport { outcomes: std::mem::take(&mut *self.outcomes.lock().unwrap()) }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a load saw.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub outcomes: Vec<Outcome>,
}

impl LoadReport {
    /// Ids answered 200: the relay promised to deliver each.
    pub fn acknowledged(&self) -> HashSet<String> {
        self.outcomes.iter().filter(|o| o.status == Some(200)).map(|o| o.id.clone()).collect()
    }

    /// Requests answered with `status`.
    pub fn with_status(&self, status: u16) -> usize {
        self.outcomes.iter().filter(|o| o.status == Some(status)).count()
    }

    /// Requests not acknowledged: any other status, or no answer.
    pub fn refused(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| o.status != Some(200)).collect()
    }

    /// A one-line account: sent, acknowledged, and the refusals by kind.
    pub fn summary(&self) -> String {
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        for o in self.refused() {
            let kind = match (o.status, &o.error) {
                (Some(s), _) => s.to_string(),
                (None, Some(e)) => format!("no answer ({})", e.split(':').next().unwrap_or(e)),
                (None, None) => "no answer".into(),
            };
            *kinds.entry(kind).or_default() += 1;
        }
        format!(
            "sent {}, acknowledged {}, refused {} {kinds:?}",
            self.outcomes.len(),
            self.acknowledged().len(),
            self.refused().len()
        )
    }
}

/// Acknowledged ids the downstream never got a 2xx for.
pub fn lost(acknowledged: &HashSet<String>, delivered: &std::collections::HashMap<String, usize>) -> Vec<String> {
    let mut l: Vec<String> = acknowledged.iter().filter(|id| !delivered.contains_key(*id)).cloned().collect();
    l.sort();
    l
}
