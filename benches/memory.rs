//! `memory`: bytes the dispatcher holds per pending event beyond the event's
//! encoded JSON (1,000,000 events pending across 1,000 webhooks; goal at
//! most 64 bytes), and per configured idle webhook (100,000 of them; goal at
//! most 1 KiB).
//!
//! Measured on the sans-IO core with a counting global allocator: the bytes
//! currently allocated before and after. Events are moved into the store by
//! draining the intake with `poll_push` while the clock stands still (nothing
//! is due), so they sit encoded in the webhooks' queues. Their encoded size
//! is computed with `wire::encode_event` of the same events.
//!
//! Prints a table with PASS/FAIL per goal and exits 0 either way.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use eventhook::dispatch::{CoreLimits, DispatchCore};
use eventhook::ManualClock;
use support::EventGen;

/// Counts the bytes currently allocated (as requested), and an estimate of
/// what glibc's malloc really uses for them (16-byte chunks with an 8-byte
/// header, 32 bytes at least).
struct Counting;

static REQUESTED: AtomicUsize = AtomicUsize::new(0);
static ESTIMATED: AtomicUsize = AtomicUsize::new(0);

fn chunk(size: usize) -> usize {
    ((size + 8 + 15) & !15).max(32)
}

fn count_alloc(size: usize) {
    REQUESTED.fetch_add(size, Ordering::Relaxed);
    ESTIMATED.fetch_add(chunk(size), Ordering::Relaxed);
}

fn count_dealloc(size: usize) {
    REQUESTED.fetch_sub(size, Ordering::Relaxed);
    ESTIMATED.fetch_sub(chunk(size), Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and returns its result; the only addition is counting sizes in
// atomics, which neither allocates nor touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            count_alloc(layout.size());
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            count_alloc(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(pointer, layout) };
        count_dealloc(layout.size());
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let new_pointer = unsafe { System.realloc(pointer, layout, new_size) };
        if !new_pointer.is_null() {
            count_dealloc(layout.size());
            count_alloc(new_size);
        }
        new_pointer
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Clone, Copy)]
struct Held {
    requested: usize,
    estimated: usize,
}

fn held() -> Held {
    Held { requested: REQUESTED.load(Ordering::Relaxed), estimated: ESTIMATED.load(Ordering::Relaxed) }
}

fn since(before: Held) -> Held {
    let now = held();
    Held {
        requested: now.requested.saturating_sub(before.requested),
        estimated: now.estimated.saturating_sub(before.estimated),
    }
}

const EVENT_WEBHOOKS: usize = 1_000;
const PENDING_EVENTS: usize = 1_000_000;
const IDLE_WEBHOOKS: usize = 100_000;
const CHUNK: usize = 10_000;

/// Per pending event: (bytes held beyond the encoded size, as requested and as estimated; mean encoded size).
fn pending_events() -> (f64, f64, f64) {
    let clock = Arc::new(ManualClock::new());
    let limits = CoreLimits { max_pending_events: 2 * PENDING_EVENTS, ..CoreLimits::default() };
    let (mut core, enqueuer) = DispatchCore::new(clock, limits);
    for bot in 0..EVENT_WEBHOOKS {
        core.configure(support::webhook_config(bot, support::EXAMPLE_BASE_URL).build().expect("valid config"));
    }
    let mut generator = EventGen::new(0x3e3);
    let mut scratch = Vec::with_capacity(64 * 1024);
    let mut encoded_total = 0usize;
    let before = held();
    let mut seq = 0u64;
    while (seq as usize) < PENDING_EVENTS {
        let events: Vec<_> = (0..CHUNK)
            .map(|index| generator.event((seq as usize + index) % EVENT_WEBHOOKS, seq + index as u64))
            .collect();
        seq += CHUNK as u64;
        for event in events {
            scratch.clear();
            eventhook::wire::encode_event(&event, &mut scratch);
            encoded_total += scratch.len();
            assert!(enqueuer.enqueue(event).is_accepted(), "no queue fills");
        }
        core.take_in_all();
        assert!(core.poll_push().is_none(), "the clock stands still: nothing is due");
    }
    let grown = since(before);
    let totals = core.stats().totals;
    assert_eq!(totals.pending, PENDING_EVENTS as u64, "every event pending");
    drop(core);
    let events = PENDING_EVENTS as f64;
    (
        (grown.requested as f64 - encoded_total as f64) / events,
        (grown.estimated as f64 - encoded_total as f64) / events,
        encoded_total as f64 / events,
    )
}

/// Bytes one `WebhookConfig` of the bench holds on the heap (its strings,
/// parsed URL and header), to tell apart the settings from the core's own
/// bookkeeping in the idle-webhook figure.
fn config_heap_bytes() -> f64 {
    let mut configs = Vec::with_capacity(IDLE_WEBHOOKS);
    let before = held();
    for bot in 0..IDLE_WEBHOOKS {
        configs.push(support::webhook_config(bot, support::EXAMPLE_BASE_URL).build().expect("valid config"));
    }
    let grown = since(before);
    drop(configs);
    grown.requested as f64 / IDLE_WEBHOOKS as f64
}

/// Per configured idle webhook: (bytes as requested, as estimated).
fn idle_webhooks() -> (f64, f64) {
    let clock = Arc::new(ManualClock::new());
    let (mut core, _enqueuer) = DispatchCore::new(clock, CoreLimits::default());
    let before = held();
    for bot in 0..IDLE_WEBHOOKS {
        core.configure(support::webhook_config(bot, support::EXAMPLE_BASE_URL).build().expect("valid config"));
    }
    assert!(core.poll_push().is_none(), "idle webhooks push nothing");
    let grown = since(before);
    assert_eq!(core.stats().webhooks, IDLE_WEBHOOKS);
    drop(core);
    let webhooks = IDLE_WEBHOOKS as f64;
    (grown.requested as f64 / webhooks, grown.estimated as f64 / webhooks)
}

fn verdict(value: f64, limit: f64) -> &'static str {
    if value <= limit {
        "PASS"
    } else {
        "FAIL"
    }
}

fn main() {
    if !support::is_bench_run() {
        println!("{}: run with `cargo bench --bench memory`", file!());
        return;
    }
    let (beyond, beyond_estimated, encoded_mean) = pending_events();
    let (per_webhook, per_webhook_estimated) = idle_webhooks();
    let config_heap = config_heap_bytes();
    println!();
    println!("memory (bytes currently allocated, counted by a wrapping global allocator)");
    println!("{:<58} {:>12} {:>16} {:>8}  verdict", "figure", "requested", "glibc estimate", "goal");
    println!(
        "{:<58} {:>12.1} {:>16.1} {:>8}  {}",
        "per pending event beyond its encoded JSON (1M on 1k hooks)",
        beyond,
        beyond_estimated,
        "<= 64",
        verdict(beyond, 64.0)
    );
    println!(
        "{:<58} {:>12.1} {:>16.1} {:>8}  {}",
        "per configured idle webhook (100k)",
        per_webhook,
        per_webhook_estimated,
        "<= 1024",
        verdict(per_webhook, 1024.0)
    );
    println!("(mean encoded event: {encoded_mean:.1} bytes; verdicts use the requested bytes)");
    println!(
        "(per idle webhook, for scale: a WebhookConfig alone holds {config_heap:.1} bytes on the heap (strings, \
         parsed URL, header); the core keeps its bot token and copies the rest once: its webhook record, the \
         endpoint buffer (token, URL, bearer, account name), the gate and its counters, both maps' slots and slack)"
    );
    println!();
    support::report_line("memory/pending_event", beyond, 64.0, "bytes beyond encoded JSON per pending event");
    support::report_line("memory/idle_webhook", per_webhook, 1024.0, "bytes per configured idle webhook");
}
