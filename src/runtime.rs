//! The scheduler: how the dispatcher spawns its task and sleeps.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;

/// Spawns the dispatcher's background task and sleeps, on the host's runtime.
///
/// The crate assumes no runtime: with the `tokio` feature,
/// [`TokioRuntime`](crate::adapters::TokioRuntime) is ready; any other
/// executor implements these two methods (see the `custom_transport` example).
///
/// ```
/// use std::time::Duration;
/// use futures::future::BoxFuture;
/// use eventhook::Runtime;
///
/// /// Runs each task on its own thread; a sleep is a timer thread.
/// #[derive(Debug)]
/// struct ThreadRuntime;
///
/// impl Runtime for ThreadRuntime {
///     fn spawn(&self, task: BoxFuture<'static, ()>) {
///         std::thread::spawn(move || futures::executor::block_on(task));
///     }
///     fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
///         let (wake, woken) = futures::channel::oneshot::channel::<()>();
///         std::thread::spawn(move || {
///             std::thread::sleep(duration);
///             let _ = wake.send(());
///         });
///         Box::pin(async move {
///             let _ = woken.await;
///         })
///     }
/// }
/// ```
pub trait Runtime: Send + Sync + fmt::Debug + 'static {
    /// Runs `task` in the background until it completes.
    fn spawn(&self, task: BoxFuture<'static, ()>);
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}
