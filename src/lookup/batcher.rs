//! Cross-event batching with bounded concurrency.
//!
//! Contract: items sent to the batcher leave in batches of at most `max_batch`;
//! a batch goes as soon as it is full *or* `max_wait` after its first item arrived,
//! whichever comes first (quickwit's size-or-deadline rule). At most `concurrency`
//! batches are being handled at once; while every slot is busy, items pile up in
//! the channel, so the next batch is full as soon as a slot frees up. With
//! `max_batch == 1` (single-IP providers) this is plain bounded concurrency.
//! Nothing is dropped: every item received ends up in exactly one batch.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

/// How batches are formed and handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Most items per batch (the provider's `max_batch()`).
    pub max_batch: NonZeroUsize,
    /// Longest time the first item of a batch waits for company.
    pub max_wait: Duration,
    /// Batches handled at once.
    pub concurrency: NonZeroUsize,
}

/// The next batch: waits for a first item (`None` once the channel is closed and
/// drained), then takes more until the batch is full or the deadline passes.
pub async fn next_batch<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    max_batch: usize,
    max_wait: Duration,
) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let deadline = super::time::from_now(max_wait);
    let mut batch = Vec::with_capacity(max_batch);
    batch.push(first);
    while batch.len() < max_batch {
        tokio::select! {
            biased;
            item = rx.recv() => match item {
                Some(item) => batch.push(item),
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    Some(batch)
}

/// Runs the batcher until the sending side is dropped: `handle` gets each batch
/// on its own task, at most `concurrency` at a time.
pub fn spawn<T, F, Fut>(
    mut rx: mpsc::UnboundedReceiver<T>,
    settings: BatchSettings,
    handle: F,
) -> JoinHandle<()>
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(settings.concurrency.get()));
    tokio::spawn(async move {
        loop {
            // A slot first, then the batch: the deadline of a batch starts with its
            // first item, not while the batch waits for a slot.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let Some(batch) =
                next_batch(&mut rx, settings.max_batch.get(), settings.max_wait).await
            else {
                break;
            };
            let work = handle(batch);
            tokio::spawn(async move {
                work.await;
                drop(slot);
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::time::Instant;

    fn settings(max_batch: usize, wait_ms: u64, concurrency: usize) -> BatchSettings {
        BatchSettings {
            max_batch: NonZeroUsize::new(max_batch).unwrap(),
            max_wait: Duration::from_millis(wait_ms),
            concurrency: NonZeroUsize::new(concurrency).unwrap(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn full_batch_goes_at_once_partial_at_the_deadline() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        let t0 = Instant::now();
        assert_eq!(
            next_batch(&mut rx, 3, Duration::from_millis(50)).await,
            Some(vec![0, 1, 2])
        );
        assert_eq!(t0.elapsed(), Duration::ZERO, "a full batch does not wait");
        assert_eq!(
            next_batch(&mut rx, 3, Duration::from_millis(50)).await,
            Some(vec![3, 4])
        );
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(50),
            "a partial one waits max_wait"
        );
        // An item arriving before the deadline joins the batch.
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            late.send(6).unwrap();
        });
        tx.send(5).unwrap();
        assert_eq!(
            next_batch(&mut rx, 3, Duration::from_millis(50)).await,
            Some(vec![5, 6])
        );
        drop(tx);
        assert_eq!(
            next_batch(&mut rx, 3, Duration::from_millis(50)).await,
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn busy_slots_make_the_next_batch_full() {
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = spawn(rx, settings(4, 10, 1), move |batch: Vec<u32>| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(batch);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        tx.send(0).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await; // first batch [0] left
        for i in 1..10 {
            tx.send(i).unwrap();
        }
        drop(tx);
        task.await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![vec![0], vec![1, 2, 3, 4], vec![5, 6, 7, 8], vec![9]]
        );
    }
}
