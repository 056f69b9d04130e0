//! The tokio runtime adapter.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::runtime::Handle;

use crate::runtime::Runtime;

/// A [`Runtime`] on tokio: spawns on, and sleeps with the timer of, the
/// runtime whose [`Handle`] it holds.
///
/// Holding a handle (rather than calling `tokio::spawn`) lets the dispatcher
/// be started from outside the runtime, e.g. from a synchronous `main` that
/// owns a runtime. The runtime needs its timer enabled (`enable_time`, or
/// `enable_all`, as `#[tokio::main]` does).
///
/// ```
/// use std::time::Duration;
/// use eventhook::adapters::TokioRuntime;
/// use eventhook::Runtime;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let runtime = TokioRuntime::current();
/// let (done, finished) = tokio::sync::oneshot::channel();
/// let sleep = runtime.sleep(Duration::from_millis(1));
/// runtime.spawn(Box::pin(async move {
///     sleep.await;
///     let _ = done.send(());
/// }));
/// finished.await.unwrap();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: Handle,
}

impl TokioRuntime {
    /// The runtime this is called from.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime; [`TokioRuntime::try_current`] does not panic.
    ///
    /// ```
    /// use eventhook::adapters::TokioRuntime;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let runtime = TokioRuntime::current();
    /// # let _ = runtime;
    /// # }
    /// ```
    pub fn current() -> TokioRuntime {
        TokioRuntime { handle: Handle::current() }
    }

    /// The runtime this is called from, or `None` outside a tokio runtime.
    ///
    /// ```
    /// use eventhook::adapters::TokioRuntime;
    ///
    /// assert!(TokioRuntime::try_current().is_none());
    /// let tokio_runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// assert!(tokio_runtime.block_on(async { TokioRuntime::try_current() }).is_some());
    /// ```
    pub fn try_current() -> Option<TokioRuntime> {
        Handle::try_current().ok().map(|handle| TokioRuntime { handle })
    }

    /// The runtime behind `handle`, usable from any thread.
    ///
    /// ```
    /// use eventhook::adapters::TokioRuntime;
    ///
    /// let tokio_runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    /// let runtime = TokioRuntime::from_handle(tokio_runtime.handle().clone());
    /// # let _ = runtime;
    /// ```
    pub fn from_handle(handle: Handle) -> TokioRuntime {
        TokioRuntime { handle }
    }

    /// The handle tasks are spawned on.
    ///
    /// ```
    /// use eventhook::adapters::TokioRuntime;
    ///
    /// let tokio_runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// let runtime = TokioRuntime::from_handle(tokio_runtime.handle().clone());
    /// assert_eq!(runtime.handle().id(), tokio_runtime.handle().id());
    /// ```
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Runtime for TokioRuntime {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // The task owns its work; nothing waits on the join handle.
        drop(self.handle.spawn(task));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        // Entering the handle registers the timer with this runtime even when
        // called from another thread; tokio clamps durations past its horizon.
        let _entered = self.handle.enter();
        Box::pin(tokio::time::sleep(duration))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    fn multi_thread_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("tokio runtime: {error}"))
    }

    #[test]
    fn try_current_is_none_outside_a_runtime() {
        assert!(TokioRuntime::try_current().is_none());
    }

    #[tokio::test]
    async fn current_spawns_on_the_running_runtime() {
        let runtime = TokioRuntime::current();
        let (done, finished) = tokio::sync::oneshot::channel();
        runtime.spawn(Box::pin(async move {
            let _ = done.send(42);
        }));
        let answer = tokio::time::timeout(Duration::from_secs(5), finished).await;
        assert!(matches!(answer, Ok(Ok(42))));
    }

    #[tokio::test]
    async fn sleep_waits_for_the_duration() {
        let runtime = TokioRuntime::current();
        let started = tokio::time::Instant::now();
        runtime.sleep(Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn huge_sleeps_do_not_panic() {
        let runtime = TokioRuntime::current();
        let sleep = runtime.sleep(Duration::MAX);
        let outcome = tokio::time::timeout(Duration::from_millis(50), sleep).await;
        assert!(outcome.is_err(), "a Duration::MAX sleep must not finish");
    }

    #[test]
    fn from_handle_works_outside_the_runtime() {
        let tokio_runtime = multi_thread_runtime();
        let runtime = TokioRuntime::from_handle(tokio_runtime.handle().clone());
        let ran = Arc::new(AtomicBool::new(false));
        let (done, finished) = std::sync::mpsc::channel();
        // Both created on a thread without a runtime context.
        let sleep = runtime.sleep(Duration::from_millis(10));
        let ran_in_task = Arc::clone(&ran);
        runtime.spawn(Box::pin(async move {
            sleep.await;
            ran_in_task.store(true, Ordering::SeqCst);
            let _ = done.send(());
        }));
        assert!(finished.recv_timeout(Duration::from_secs(5)).is_ok());
        assert!(ran.load(Ordering::SeqCst));
    }

    #[test]
    fn debug_does_not_panic_and_clones_share_the_runtime() {
        let tokio_runtime = multi_thread_runtime();
        let runtime = TokioRuntime::from_handle(tokio_runtime.handle().clone());
        assert!(format!("{runtime:?}").starts_with("TokioRuntime"));
        assert_eq!(runtime.clone().handle().id(), runtime.handle().id());
    }
}
