//! Coalesces concurrent store writes into script calls: whatever arrived while earlier
//! batches were in Redis goes in the next one, and up to `parallel` batches are in Redis at
//! once, so throughput is not one round trip per batch. At low rates a batch is one item
//! and costs what a single call would; at high rates one call serves many requests. Each
//! caller still gets its own answer only after Redis answered the batch holding its item.

use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};
use webhook_relay_store::StoreError;

/// Why a submitted item got no answer from Redis.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BatchError {
    /// The script call holding the item failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The call answered a different number of results than items it was given (a bug).
    #[error("a batch of {sent} items was answered with {answered} results")]
    Mismatch { sent: usize, answered: usize },
    /// The batching task is gone (the process is stopping).
    #[error("the relay is stopping")]
    Stopped,
}

type Reply<O> = oneshot::Sender<Result<O, BatchError>>;

/// A running batcher; cheap to clone, stops when the last clone is dropped.
pub struct Batcher<I, O> {
    tx: mpsc::UnboundedSender<(I, Reply<O>)>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Batcher { tx: self.tx.clone() }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the batching task; `run` gets up to `max` items and answers one output per
    /// item, in order; at most `parallel` calls of `run` are under way at once.
    pub fn start<F, Fut>(max: usize, parallel: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, StoreError>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(I, Reply<O>)>();
        let run = Arc::new(run);
        let slots = Arc::new(Semaphore::new(parallel.max(1)));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Wait for a free slot first: what arrives meanwhile joins this batch.
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let mut items = vec![first];
                while items.len() < max {
                    match rx.try_recv() {
                        Ok(next) => items.push(next),
                        Err(_) => break,
                    }
                }
                let (inputs, replies): (Vec<I>, Vec<Reply<O>>) = items.into_iter().unzip();
                let call = run(inputs);
                tokio::spawn(async move {
                    answer(replies, call.await);
                    drop(slot);
                });
            }
        });
        Batcher { tx }
    }

    /// Submits one item and waits for its own answer.
    pub async fn submit(&self, item: I) -> Result<O, BatchError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((item, reply)).map_err(|_| BatchError::Stopped)?;
        answer.await.map_err(|_| BatchError::Stopped)?
    }
}

/// Gives each caller of one batch its own result, or the batch's error.
fn answer<O>(replies: Vec<Reply<O>>, result: Result<Vec<O>, StoreError>) {
    let n = replies.len();
    match result {
        Ok(outputs) if outputs.len() == n => {
            for (reply, out) in replies.into_iter().zip(outputs) {
                let _ = reply.send(Ok(out));
            }
        }
        Ok(outputs) => {
            let e = BatchError::Mismatch { sent: n, answered: outputs.len() };
            replies.into_iter().for_each(|r| drop(r.send(Err(e.clone()))));
        }
        Err(e) => replies.into_iter().for_each(|r| drop(r.send(Err(BatchError::Store(e.clone()))))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_items_share_calls_and_each_gets_its_own_answer() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let b = Batcher::start(64, 1, move |items: Vec<u32>| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(items.into_iter().map(|i| i * 10).collect())
            }
        });
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { (i, b.submit(i).await.unwrap()) })
            })
            .collect();
        for t in tasks {
            let (i, out) = t.await.unwrap();
            assert_eq!(out, i * 10, "answers go back to their own caller");
        }
        let n = calls.load(Ordering::Relaxed);
        assert!((200 / 64..200).contains(&n), "200 items took {n} calls");
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_item_in_it() {
        let b: Batcher<u32, u32> = Batcher::start(8, 2, |_items: Vec<u32>| async {
            Err(StoreError::Timeout(std::time::Duration::from_secs(1)))
        });
        let e = b.submit(1).await.unwrap_err().to_string();
        assert!(e.contains("did not answer"), "{e}");
    }

    /// Batches overlap up to the bound; each caller is answered by its own batch's call and
    /// only once that call returned (here: once the test lets it), never earlier.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_batches_answer_each_caller_only_after_its_own_call_returned() {
        use std::collections::HashMap;
        use std::sync::Mutex;
        use tokio::sync::Notify;
        // Each call registers a gate and waits on it; the test opens gates one at a time.
        type Gates = Arc<Mutex<Vec<(Vec<u32>, Arc<Notify>)>>>;
        let gates: Gates = Arc::default();
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (g, r, p) = (gates.clone(), running.clone(), peak.clone());
        let b = Batcher::start(4, 3, move |items: Vec<u32>| {
            let gate = Arc::new(Notify::new());
            g.lock().unwrap().push((items.clone(), gate.clone()));
            let (r, p) = (r.clone(), p.clone());
            async move {
                p.fetch_max(r.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                gate.notified().await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(items.into_iter().map(|i| i + 1000).collect())
            }
        });
        let answered: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
        for i in 0..20u32 {
            let (b, answered) = (b.clone(), answered.clone());
            tokio::spawn(async move {
                let out = b.submit(i).await.unwrap();
                answered.lock().unwrap().insert(i, out);
            });
        }
        let wait_calls = |n: usize| {
            let gates = gates.clone();
            async move {
                for _ in 0..500 {
                    if gates.lock().unwrap().len() >= n {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                panic!("fewer than {n} calls started");
            }
        };
        wait_calls(3).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(gates.lock().unwrap().len(), 3, "more than `parallel` calls at once");
        assert!(answered.lock().unwrap().is_empty(), "a caller was answered before its call returned");
        let mut released = 0;
        while answered.lock().unwrap().len() < 20 {
            let next = gates.lock().unwrap().get(released).cloned();
            let Some((items, gate)) = next else {
                wait_calls(released + 1).await;
                continue;
            };
            gate.notify_one();
            released += 1;
            for _ in 0..500 {
                if items.iter().all(|i| answered.lock().unwrap().contains_key(i)) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            let done = answered.lock().unwrap().clone();
            let still_gated: Vec<u32> =
                gates.lock().unwrap()[released..].iter().flat_map(|(items, _)| items.clone()).collect();
            assert!(still_gated.iter().all(|i| !done.contains_key(i)), "answered before its call returned");
            assert!(items.iter().all(|i| done.get(i) == Some(&(i + 1000))), "each caller gets its own answer");
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3, "batches overlapped up to the bound");
    }
}
