//! Who hears of every call (for billing) and every dropped event.

use std::fmt;

use super::outcome::{CallRecord, DroppedEvents};

/// Hears about every call (for billing) and every dropped event.
///
/// Called from the dispatcher's task: return quickly. Both methods do
/// nothing by default.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use eventhook::dispatch::{CallRecord, DeliveryObserver};
///
/// #[derive(Debug, Default)]
/// struct Billing {
///     outgoing_messages: AtomicU64,
/// }
///
/// impl DeliveryObserver for Billing {
///     fn call_made(&self, _call: &CallRecord) {
///         self.outgoing_messages.fetch_add(1, Ordering::Relaxed);
///     }
/// }
/// ```
pub trait DeliveryObserver: Send + Sync + fmt::Debug + 'static {
    /// A call was made (successful or not).
    fn call_made(&self, call: &CallRecord) {
        let _ = call;
    }
    /// Accepted events were dropped.
    fn events_dropped(&self, dropped: &DroppedEvents) {
        let _ = dropped;
    }
}

/// A [`DeliveryObserver`] that ignores everything (the counts stay in the stats).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl DeliveryObserver for NoObserver {}
