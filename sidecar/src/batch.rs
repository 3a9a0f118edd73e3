//! Coalesces concurrent store writes into one script call: whatever arrived while the
//! previous batch was in Redis goes in the next one. At low rates a batch is one item and
//! costs what a single call would; at high rates one call serves many requests. Each caller
//! still gets its own answer only after Redis answered the batch holding its item.

use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
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
    /// item, in order.
    pub fn start<F, Fut>(max: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, StoreError>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(I, Reply<O>)>();
        let run = Arc::new(run);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut items = vec![first];
                while items.len() < max {
                    match rx.try_recv() {
                        Ok(next) => items.push(next),
                        Err(_) => break,
                    }
                }
                let (inputs, replies): (Vec<I>, Vec<Reply<O>>) = items.into_iter().unzip();
                let n = inputs.len();
                match run(inputs).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_items_share_calls_and_each_gets_its_own_answer() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let b = Batcher::start(64, move |items: Vec<u32>| {
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
        let b: Batcher<u32, u32> =
            Batcher::start(8, |_items: Vec<u32>| async { Err(StoreError::Timeout(std::time::Duration::from_secs(1))) });
        let e = b.submit(1).await.unwrap_err().to_string();
        assert!(e.contains("did not answer"), "{e}");
    }
}
