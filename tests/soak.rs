//! A seeded randomized soak: bots enqueue from two threads while their
//! receivers (see `faults`) misbehave at random; every snapshot balances and,
//! at shutdown, every accepted event was acknowledged by its receiver,
//! handed back, or dropped with a reason: nothing is lost.
//!
//! Short by default (about 2 s). `EVENTHOOK_SOAK_SECS=600` runs it longer;
//! `EVENTHOOK_SOAK_SEED=<n>` replays a run (the seed is printed).
#![cfg(all(feature = "reqwest", feature = "tokio"))]

mod common;
mod faults;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestRuntime;
use eventhook::adapters::ReqwestTransport;
use eventhook::dispatch::{
    CallRecord, DeliveryObserver, Dispatcher, DroppedEvents, EnqueueOutcome, WebhookDispatcher, WebhookState,
};
use eventhook::{ChatContext, Event, EventFactory, WebhookConfig};
use faults::{Behaviour, FaultyReceiver, SECRET};

const BOTS: usize = 6;
const TIMEOUT: Duration = Duration::from_millis(200);

/// splitmix64: small, seedable, the same on every platform.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// Mostly `200`, and every fault of the fault-injection suite now and then.
fn behaviour(rng: &mut Rng) -> Behaviour {
    match rng.below(100) {
        0..=54 => Behaviour::Status(200),
        55..=62 => Behaviour::Status(500),
        63..=65 => Behaviour::Status(404),
        66..=68 => Behaviour::Status(204),
        69..=71 => Behaviour::Status(301),
        72..=75 => Behaviour::Slow(TIMEOUT / 4),
        76..=78 => Behaviour::Slow(TIMEOUT * 2),
        79..=82 => Behaviour::Reset,
        83..=86 => Behaviour::HeadersThenStall,
        87..=91 => Behaviour::OkThenStalledBody,
        92..=94 => Behaviour::HugeBody,
        _ => Behaviour::Garbage,
    }
}

#[derive(Debug, Default)]
struct Dropped(Mutex<Vec<String>>);

impl DeliveryObserver for Dropped {
    fn call_made(&self, _call: &CallRecord) {}
    fn events_dropped(&self, dropped: &DroppedEvents) {
        self.0.lock().unwrap().extend(dropped.events.iter().map(data));
    }
}

fn data(event: &Event) -> String {
    match event {
        Event::UserMessage(message) => message.data.clone(),
        other => format!("{other:?}"),
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_faults_lose_nothing_and_every_snapshot_balances() {
    let seconds = env_number("EVENTHOOK_SOAK_SECS").unwrap_or(2);
    let seed = env_number("EVENTHOOK_SOAK_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!("soak: {seconds} s, seed {seed} (EVENTHOOK_SOAK_SEED={seed} gives the same settings and sequences of choices; timing still varies)");
    let limit = Duration::from_secs(seconds + 30);
    tokio::time::timeout(limit, soak(Duration::from_secs(seconds), seed)).await.expect("the soak ends in time");
}

async fn soak(duration: Duration, seed: u64) {
    let mut rng = Rng(seed);
    let mut receivers = Vec::new();
    for _ in 0..BOTS {
        let choices = Mutex::new(Rng(rng.next()));
        receivers.push(FaultyReceiver::with(move |_| behaviour(&mut choices.lock().unwrap())).await);
    }
    let transport = ReqwestTransport::builder()
        .allow_private_networks(true)
        .request_timeout(TIMEOUT * 5)
        .build()
        .expect("transport");
    let dropped = Arc::new(Dropped::default());
    let dispatcher = Arc::new(
        WebhookDispatcher::builder()
            .transport(Arc::new(transport))
            .runtime(Arc::new(TestRuntime))
            .observer(dropped.clone())
            .build()
            .unwrap(),
    );
    let configs: Vec<WebhookConfig> = (0..BOTS)
        .map(|bot| {
            WebhookConfig::builder(format!("bot-{bot}"), "Account", receivers[bot].url(), SECRET)
                .push_interval(Duration::from_millis(20))
                .request_timeout(TIMEOUT)
                .max_batch_events(1 + rng.below(40) as usize)
                .queue_capacity(100 + rng.below(400) as usize)
                .build()
                .unwrap()
        })
        .collect();
    for config in &configs {
        dispatcher.configure(config.clone()).unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let producers: Vec<_> = (0..2)
        .map(|producer| {
            let (dispatcher, stop, accepted) = (dispatcher.clone(), stop.clone(), accepted.clone());
            let mut rng = Rng(rng.next());
            std::thread::spawn(move || {
                let chat = ChatContext::new("conversation", "TelegramChannel");
                let factories: Vec<_> =
                    (0..BOTS).map(|bot| EventFactory::new(format!("bot-{bot}"), "Account")).collect();
                let mut sequence = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let bot = rng.below(BOTS as u64) as usize;
                    let text = format!("p{producer}-{sequence}");
                    sequence += 1;
                    match dispatcher.enqueue(Event::UserMessage(factories[bot].message(&chat, text.as_str()))) {
                        EnqueueOutcome::Accepted => {
                            accepted.lock().unwrap().insert(text);
                        }
                        // Full queues and disabled webhooks refuse; a refused event was never accepted.
                        _ => std::thread::sleep(Duration::from_micros(200)),
                    }
                    if rng.below(16) == 0 {
                        std::thread::sleep(Duration::from_micros(rng.below(2000)));
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut snapshots = 0u64;
    while started.elapsed() < duration {
        let totals = dispatcher.stats().totals;
        assert!(totals.is_balanced(), "snapshot {snapshots}: {totals:?}");
        snapshots += 1;
        for config in &configs {
            if dispatcher.webhook_stats(config.bot_token()).is_some_and(|stats| stats.state == WebhookState::Disabled) {
                // The owner fixes the endpoint: configuring again re-enables it.
                dispatcher.configure(config.clone()).unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for producer in producers {
        producer.join().unwrap();
    }
    let report = dispatcher.shutdown(TIMEOUT * 10).await;

    let accepted = accepted.lock().unwrap().clone();
    let totals = report.stats.totals;
    assert!(totals.is_balanced(), "{totals:?}");
    assert_eq!(totals.accepted, accepted.len() as u64, "every accepted event counted once");
    assert_eq!((totals.pending, totals.in_flight), (0, 0), "nothing left behind at shutdown");
    let mut acknowledged = HashSet::new();
    let mut acknowledgements = 0;
    for receiver in &receivers {
        assert!(receiver.state.refused.lock().unwrap().is_empty(), "the crate's receiver accepted every push");
        let seen = receiver.acknowledged();
        acknowledgements += seen.len();
        acknowledged.extend(seen);
    }
    let handed_back: HashSet<String> =
        report.undelivered.iter().map(data).chain(dropped.0.lock().unwrap().iter().cloned()).collect();
    let lost: Vec<&String> =
        accepted.iter().filter(|text| !acknowledged.contains(*text) && !handed_back.contains(*text)).collect();
    assert!(
        lost.is_empty(),
        "seed {seed}: {} events lost, e.g. {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    assert!(totals.delivered <= acknowledgements as u64, "delivered only what a receiver answered 200");
    assert_eq!(totals.delivered + totals.dropped_total(), totals.accepted);
    println!(
        "soak: {} accepted, {} delivered, {} dropped, {} acknowledgements (duplicates included), {} calls ({} failed), {snapshots} snapshots",
        totals.accepted,
        totals.delivered,
        totals.dropped_total(),
        acknowledgements,
        totals.calls,
        totals.calls_failed
    );
    assert!(totals.calls_failed > 0 && totals.delivered > 0, "the faults and the successes both happened");
}
