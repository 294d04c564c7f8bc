//! Single flight: one cached value, and at most one refresh of it at a time whose result every
//! caller that waited shares — a success and a failure alike, so 1,000 callers on a failing
//! refresh cost Amazon one call, not 1,000.
//!
//! The refresh runs as its own task: a caller that goes away (a dropped HTTP connection) does
//! not cancel a refresh halfway between Amazon's answer and the database write.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::VendError;

/// A cached value with a shared refresh.
#[derive(Debug)]
pub struct Flight<T> {
    value: RwLock<Option<Arc<T>>>,
    lock: tokio::sync::Mutex<()>,
    /// Refreshes finished so far.
    finished: AtomicU64,
    /// The last refresh's failure, handed to the callers that waited for it.
    failure: Mutex<Option<VendError>>,
}

impl<T> Default for Flight<T> {
    fn default() -> Self {
        Flight {
            value: RwLock::new(None),
            lock: tokio::sync::Mutex::new(()),
            finished: AtomicU64::new(0),
            failure: Mutex::new(None),
        }
    }
}

impl<T: Send + Sync + 'static> Flight<T> {
    /// A flight holding `value`.
    pub fn with(value: Option<Arc<T>>) -> Self {
        let flight = Flight::default();
        *flight.value.write() = value;
        flight
    }

    /// The cached value, fresh or not.
    pub fn current(&self) -> Option<Arc<T>> {
        self.value.read().clone()
    }

    /// Drops the cached value.
    pub fn clear(&self) {
        *self.value.write() = None;
    }

    /// The cached value when `fresh` says so; otherwise one refresh for all concurrent callers.
    pub async fn get<F, Fut>(&self, fresh: impl Fn(&T) -> bool, refresh: F) -> Result<Arc<T>, VendError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<T>, VendError>> + Send + 'static,
    {
        if let Some(value) = self.current().filter(|v| fresh(v)) {
            return Ok(value);
        }
        let seen = self.finished.load(Ordering::Acquire);
        let _turn = self.lock.lock().await;
        if let Some(value) = self.current().filter(|v| fresh(v)) {
            return Ok(value);
        }
        if self.finished.load(Ordering::Acquire) != seen
            && let Some(failure) = self.failure.lock().clone()
        {
            // A refresh finished while we waited, and failed: its answer is ours too.
            return Err(failure);
        }
        let result = match tokio::spawn(refresh()).await {
            Ok(result) => result,
            Err(join) => Err(VendError::Internal(format!("the refresh task failed: {join}"))),
        };
        match &result {
            Ok(value) => {
                *self.value.write() = Some(value.clone());
                *self.failure.lock() = None;
            }
            Err(failure) => *self.failure.lock() = Some(failure.clone()),
        }
        self.finished.fetch_add(1, Ordering::Release);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_refresh_and_its_failure() {
        let flight = Arc::new(Flight::<u32>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (flight, calls) = (flight.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                flight
                    .get(
                        |_| true,
                        move || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            Err(VendError::Unavailable {
                                message: "down".into(),
                                retry_after_s: 1,
                            })
                        },
                    )
                    .await
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap().is_err());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // The next caller tries again, and a success is shared the same way.
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (flight, calls) = (flight.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                flight
                    .get(
                        |v| *v == 7,
                        move || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            Ok(Arc::new(7))
                        },
                    )
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(*task.await.unwrap().unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
