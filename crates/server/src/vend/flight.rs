//! Single flight: one cached value, and at most one refresh of it at a time whose result every
//! caller that waited shares — a success and a failure alike, so 1,000 callers on a failing
//! refresh cost Amazon one call, not 1,000. A failure is also kept for a while (its
//! [`VendError::hold_ms`]), so callers arriving after it do not call Amazon again at once.
//!
//! The refresh runs as its own task that holds the turn and writes the result back itself: a
//! caller that goes away (a dropped HTTP connection) neither cancels a refresh halfway between
//! Amazon's answer and the database write, nor lets a second refresh start beside it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::VendError;

/// A cached value with a shared refresh.
#[derive(Debug)]
pub struct Flight<T> {
    value: RwLock<Option<Arc<T>>>,
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Refreshes finished so far.
    finished: AtomicU64,
    /// The last refresh's failure and until when (ms) it stands for new callers too.
    failure: Mutex<Option<(VendError, i64)>>,
}

impl<T> Default for Flight<T> {
    fn default() -> Self {
        Flight {
            value: RwLock::new(None),
            turn: Arc::new(tokio::sync::Mutex::new(())),
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

    /// Drops the cached value and any remembered failure.
    pub fn clear(&self) {
        *self.value.write() = None;
        *self.failure.lock() = None;
    }

    /// Whether the last refresh failed and left nothing to serve.
    pub fn failed_empty(&self) -> bool {
        self.current().is_none() && self.failure.lock().is_some()
    }

    /// A failure still standing at `now`.
    fn standing_failure(&self, now: impl Fn() -> i64) -> Option<VendError> {
        match &*self.failure.lock() {
            Some((failure, until)) if now() < *until => Some(failure.clone()),
            _ => None,
        }
    }

    /// The cached value when `fresh` says so; otherwise one refresh for all concurrent callers.
    pub async fn get<F, Fut>(
        self: &Arc<Self>,
        now: impl Fn() -> i64 + Send + Sync + Clone + 'static,
        fresh: impl Fn(&T) -> bool,
        refresh: F,
    ) -> Result<Arc<T>, VendError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<T>, VendError>> + Send + 'static,
    {
        if let Some(value) = self.current().filter(|v| fresh(v)) {
            return Ok(value);
        }
        if let Some(failure) = self.standing_failure(&now) {
            return Err(failure);
        }
        let seen = self.finished.load(Ordering::Acquire);
        let turn = self.turn.clone().lock_owned().await;
        if let Some(value) = self.current().filter(|v| fresh(v)) {
            return Ok(value);
        }
        if self.finished.load(Ordering::Acquire) != seen
            && let Some((failure, _)) = self.failure.lock().clone()
        {
            // A refresh finished while we waited, and failed: its answer is ours too.
            return Err(failure);
        }
        if let Some(failure) = self.standing_failure(&now) {
            return Err(failure);
        }
        let flight = self.clone();
        let work = refresh();
        let task = tokio::spawn(async move {
            let _turn = turn;
            let result = work.await;
            match &result {
                Ok(value) => {
                    *flight.value.write() = Some(value.clone());
                    *flight.failure.lock() = None;
                }
                Err(failure) => {
                    // Every caller already waiting shares it; later ones while it holds.
                    let until = now() + failure.hold_ms();
                    *flight.failure.lock() = Some((failure.clone(), until));
                }
            }
            flight.finished.fetch_add(1, Ordering::Release);
            result
        });
        match task.await {
            Ok(result) => result,
            Err(join) => Err(VendError::Internal(format!("the refresh task failed: {join}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn now() -> i64 {
        lwa::Clock::now_ms(&lwa::SystemClock)
    }

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
                        now,
                        |_| true,
                        move || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Err(VendError::Unavailable {
                                message: "down".into(),
                                retry_after_s: 0,
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

        // Once the failure no longer holds, the next caller tries again, and a success is
        // shared the same way.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (flight, calls) = (flight.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                flight
                    .get(
                        now,
                        |v| *v == 7,
                        move || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_goes_away_neither_cancels_the_refresh_nor_doubles_it() {
        let flight = Arc::new(Flight::<u32>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let refresh = |calls: Arc<AtomicUsize>| {
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(Arc::new(9))
            }
        };
        let leader = {
            let (flight, calls) = (flight.clone(), calls.clone());
            tokio::spawn(async move { flight.get(now, |_| true, refresh(calls)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let follower = {
            let (flight, calls) = (flight.clone(), calls.clone());
            tokio::spawn(async move { flight.get(now, |_| true, refresh(calls)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        assert_eq!(*follower.await.unwrap().unwrap(), 9);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flight.current().map(|v| *v), Some(9));
    }

    #[tokio::test]
    async fn a_failure_holds_for_its_time() {
        let flight = Arc::new(Flight::<u32>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            let calls = calls.clone();
            let result = flight
                .get(
                    now,
                    |_| true,
                    move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Err(VendError::Unavailable {
                            message: "throttled".into(),
                            retry_after_s: 60,
                        })
                    },
                )
                .await;
            assert!(result.is_err());
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "later callers get the held failure"
        );
        assert!(flight.failed_empty());
        flight.clear();
        assert!(!flight.failed_empty());
    }
}
