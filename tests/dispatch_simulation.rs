//! A randomized simulation of the dispatch core: many bots, random events,
//! outcomes, reconfigurations and time steps. After every step every event is
//! accounted for; at the end none was lost and none delivered twice. A
//! failed call is sent again as it was (events, body, `webhook-id` on the
//! signed webhooks) unless its settings were saved since; every other call
//! has a new id.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::Harness;
use eventhook::dispatch::{CoreLimits, Notice, Push};
use eventhook::{Event, EventFlags, EventKind, TransportError, TransportErrorKind};
use proptest::prelude::*;

const BOTS: usize = 4;

#[derive(Debug, Clone)]
enum Step {
    Enqueue { bot: usize, count: usize, shape: usize },
    Advance { millis: u64 },
    Answer { pick: usize, outcome: Outcome },
    Reconfigure { bot: usize, selective: bool, batch: usize, list: usize },
    Remove { bot: usize },
    Flush,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    ServerError,
    Redirect,
    Timeout,
    Reset,
}

fn step() -> impl Strategy<Value = Step> {
    let outcome = prop_oneof![
        3 => Just(Outcome::Ok),
        1 => Just(Outcome::ServerError),
        1 => Just(Outcome::Redirect),
        1 => Just(Outcome::Timeout),
        1 => Just(Outcome::Reset),
    ];
    prop_oneof![
        4 => (0..BOTS, 1..20usize, any::<usize>()).prop_map(|(bot, count, shape)| Step::Enqueue { bot, count, shape }),
        3 => (0..40_000u64).prop_map(|millis| Step::Advance { millis }),
        4 => (any::<usize>(), outcome).prop_map(|(pick, outcome)| Step::Answer { pick, outcome }),
        1 => (0..BOTS, any::<bool>(), 1..8usize, 0..LISTS.len())
            .prop_map(|(bot, selective, batch, list)| Step::Reconfigure { bot, selective, batch, list }),
        1 => (0..BOTS).prop_map(|bot| Step::Remove { bot }),
        1 => Just(Step::Flush),
    ]
}

/// The variable lists webhooks are configured with.
const LISTS: [&[&str]; 4] = [&[], &["plan"], &["email", "plan", "locale"], &["locale"]];

/// The conversations' variables events are enqueued with.
const CONVERSATION_VARIABLES: [&[(&str, &str)]; 4] =
    [&[], &[("plan", "gold")], &[("plan", "gold"), ("email", "ada@example.com")], &[("other", "x")]];

const SUBTYPES: [Option<&str>; 3] = [None, Some("Carousel"), Some("QuickReply")];

/// Even bots sign their calls.
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn signing_secrets(bot: usize) -> Vec<&'static str> {
    if bot.is_multiple_of(2) {
        vec![SIGNING_SECRET]
    } else {
        Vec::new()
    }
}

fn bot_name(bot: usize) -> String {
    format!("bot-{bot}")
}

/// Events carry a unique id in `Data` (messages) or `Text` (NLP misses).
fn id_of(event: &Event) -> String {
    match event {
        Event::UserMessage(message) => message.data.clone(),
        Event::NlpMissed(missed) => missed.text.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

/// What the receiver must see of an event beyond its id: its subtype and variables.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    item_sub_type: Option<String>,
    variables: Vec<(String, String)>,
}

fn shape_of(event: &Event) -> Shape {
    let item_sub_type = match event {
        Event::UserMessage(message) => message.item_sub_type.clone(),
        _ => None,
    };
    let variables = event.variables().iter().map(|(name, value)| (name.to_owned(), value.to_owned())).collect();
    Shape { item_sub_type, variables }
}

/// The bounds a simulation runs with.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    queue_capacity: usize,
    max_pending_events: usize,
    /// Events of one `Enqueue` step per unit of its drawn count.
    burst: usize,
}

/// Small bounds: every webhook is always nearer its bound than the intake's
/// ring holds, so `enqueue` counts every event.
const SMALL: Bounds = Bounds { queue_capacity: 60, max_pending_events: 200, burst: 1 };

/// Bounds larger than two of the intake's rings (1,024 events): events go
/// uncounted into the ring, webhooks become crowded near their bound and
/// stop being crowded once delivered, and bursts fill the ring.
const LARGE: Bounds = Bounds { queue_capacity: 2_200, max_pending_events: 5_000, burst: 60 };

struct Simulation {
    harness: Harness,
    bounds: Bounds,
    in_flight: Vec<Push>,
    next_id: u64,
    accepted: HashSet<String>,
    delivered: HashSet<String>,
    dropped: HashSet<String>,
    /// Each webhook's list of included variables, as configured now.
    lists: [usize; BOTS],
    /// What each accepted event must look like when it arrives or comes back.
    shapes: HashMap<String, Shape>,
    /// Per bot, the body and `webhook-id` of its failed call, which its next push must repeat.
    retries: HashMap<String, (Vec<u8>, Option<String>)>,
    /// Every `webhook-id` a new call was given.
    call_ids: HashSet<String>,
}

fn webhook_id(push: &Push) -> Option<String> {
    push.request.headers().get("webhook-id").map(|id| id.to_str().unwrap().to_owned())
}

impl Simulation {
    fn new(bounds: Bounds) -> Simulation {
        let limits = CoreLimits { max_pending_events: bounds.max_pending_events, max_concurrent_pushes: 3 };
        let mut harness = Harness::with_limits(limits);
        for bot in 0..BOTS {
            harness.configure(
                Harness::config(&bot_name(bot))
                    .max_batch_events(5)
                    .push_interval(Duration::from_secs(10))
                    .queue_capacity(bounds.queue_capacity)
                    .include_variables(LISTS[bot % LISTS.len()].iter().copied())
                    .signing_secrets(signing_secrets(bot))
                    .build()
                    .unwrap(),
            );
        }
        Simulation {
            harness,
            bounds,
            in_flight: Vec::new(),
            next_id: 0,
            accepted: HashSet::new(),
            delivered: HashSet::new(),
            dropped: HashSet::new(),
            lists: std::array::from_fn(|bot| bot % LISTS.len()),
            shapes: HashMap::new(),
            retries: HashMap::new(),
            call_ids: HashSet::new(),
        }
    }

    /// The event as its webhook will send it: subtype kept, variables filtered by the webhook's list.
    fn expected_shape(&self, bot: usize, event: &Event) -> Shape {
        let mut shape = shape_of(event);
        let available = std::mem::take(&mut shape.variables);
        shape.variables = LISTS[self.lists[bot]]
            .iter()
            .filter_map(|name| available.iter().find(|(known, _)| known == name).cloned())
            .collect();
        shape
    }

    fn check_shape(&self, event: &Event) {
        let id = id_of(event);
        assert_eq!(Some(&shape_of(event)), self.shapes.get(&id), "{id}: subtype or variables changed");
    }

    fn hand_back(&mut self, events: Vec<Event>) {
        for event in events {
            let id = id_of(&event);
            assert!(self.accepted.contains(&id), "handed back an event never accepted: {id}");
            assert!(self.dropped.insert(id.clone()), "handed back twice: {id}");
            assert!(!self.delivered.contains(&id), "handed back after delivery: {id}");
            self.check_shape(&event);
        }
    }

    fn take_notices(&mut self) {
        self.harness.collect_notices();
        for notice in std::mem::take(&mut self.harness.notices) {
            if let Notice::Dropped(dropped) = notice {
                self.hand_back(dropped.events);
            }
        }
    }

    fn run(&mut self, step: Step) {
        match step {
            Step::Enqueue { bot, count, shape } => {
                // Half the bursts without a take-in between events (and so without a
                // check of the balance, which takes in): the ring then fills.
                let taken_in_between = shape % 2 == 0;
                for index in 0..count * self.bounds.burst {
                    let id = format!("event-{}", self.next_id);
                    self.next_id += 1;
                    let factory = self.harness.factory(&bot_name(bot));
                    let variables = CONVERSATION_VARIABLES[(shape + index) % CONVERSATION_VARIABLES.len()];
                    let chat = eventhook::ChatContext::new("c", "Web")
                        .variables(variables.iter().copied().collect::<eventhook::Variables>());
                    let event = if self.next_id.is_multiple_of(3) {
                        Event::NlpMissed(factory.missed_text(&chat, id.clone()))
                    } else {
                        let mut message = factory.message(&chat, id.clone());
                        message.item_sub_type = SUBTYPES[(shape / 7 + index) % SUBTYPES.len()].map(str::to_owned);
                        Event::UserMessage(message)
                    };
                    let expected = self.expected_shape(bot, &event);
                    let outcome = if taken_in_between {
                        self.harness.enqueue(event)
                    } else {
                        self.harness.enqueuer.enqueue(event)
                    };
                    if outcome.is_accepted() {
                        self.shapes.insert(id.clone(), expected);
                        self.accepted.insert(id);
                    }
                }
            }
            Step::Advance { millis } => self.harness.advance(Duration::from_millis(millis)),
            Step::Answer { pick, outcome } => {
                if !self.in_flight.is_empty() {
                    let push = self.in_flight.swap_remove(pick % self.in_flight.len());
                    let result = match outcome {
                        Outcome::Ok => Ok(http::StatusCode::OK),
                        Outcome::ServerError => Ok(http::StatusCode::INTERNAL_SERVER_ERROR),
                        Outcome::Redirect => Ok(http::StatusCode::MOVED_PERMANENTLY),
                        Outcome::Timeout => Err(TransportError::new(TransportErrorKind::Timeout, "timed out")),
                        Outcome::Reset => Err(TransportError::new(TransportErrorKind::Io, "connection reset")),
                    };
                    let delivered = result.as_ref().is_ok_and(|status| *status == http::StatusCode::OK);
                    self.harness.core.on_push_result(&push.id, result);
                    if !delivered {
                        let failed = (push.request.body().clone(), webhook_id(&push));
                        self.retries.insert(push.id.bot_token().to_owned(), failed);
                    }
                    if delivered {
                        for event in eventhook::wire::parse_push(push.request.body()).unwrap() {
                            let id = id_of(&event);
                            assert!(self.accepted.contains(&id), "delivered an event never accepted: {id}");
                            assert!(self.delivered.insert(id.clone()), "delivered twice: {id}");
                            assert!(!self.dropped.contains(&id), "delivered after being handed back: {id}");
                            self.check_shape(&event);
                        }
                    }
                }
            }
            Step::Reconfigure { bot, selective, batch, list } => {
                let events = if selective { EventFlags::from(EventKind::UserMessage) } else { EventFlags::all() };
                self.harness.configure(
                    Harness::config(&bot_name(bot))
                        .events(events)
                        .max_batch_events(batch)
                        .push_interval(Duration::from_secs(10))
                        .queue_capacity(self.bounds.queue_capacity)
                        .include_variables(LISTS[list].iter().copied())
                        .signing_secrets(signing_secrets(bot))
                        .build()
                        .unwrap(),
                );
                self.lists[bot] = list;
                // Saving the settings forms a failed call again (one under way stays as it is).
                self.retries.remove(&bot_name(bot));
            }
            Step::Remove { bot } => {
                let name = bot_name(bot);
                let returned = self.harness.core.remove(&name);
                // Its calls are abandoned: their results will be ignored.
                self.in_flight.retain(|push| push.id.bot_token() != name);
                self.hand_back(returned);
                self.retries.remove(&name);
                let config = Harness::config(&name)
                    .max_batch_events(5)
                    .queue_capacity(self.bounds.queue_capacity)
                    .signing_secrets(signing_secrets(bot));
                self.harness.configure(config.build().unwrap());
                self.lists[bot] = 0;
            }
            Step::Flush => self.harness.core.begin_flush(),
        }
        let pushes = self.harness.poll_all();
        for push in &pushes {
            let id = webhook_id(push);
            match self.retries.remove(push.id.bot_token()) {
                Some((body, failed_id)) => {
                    let (sent, failed) = (String::from_utf8_lossy(push.request.body()), String::from_utf8_lossy(&body));
                    assert_eq!(sent, failed, "a retry carries exactly the failed call's events");
                    assert_eq!(id, failed_id, "a retry keeps the call's webhook-id");
                }
                None => {
                    if let Some(id) = id {
                        assert!(self.call_ids.insert(id), "a new call has a new webhook-id");
                    }
                }
            }
        }
        self.in_flight.extend(pushes);
        self.take_notices();
        self.harness.check_balance();
        let totals = self.harness.core.stats().totals;
        assert_eq!(totals.accepted as usize, self.accepted.len());
        assert_eq!(totals.delivered as usize, self.delivered.len());
        assert_eq!(totals.in_flight as usize, self.in_flight.iter().map(|push| push.events).sum::<usize>());
    }

    /// No webhook holds more than its bound, nor all of them more than the global one.
    fn check_bounds(&mut self) {
        let mut total = 0;
        for bot in 0..BOTS {
            if let Some(stats) = self.harness.core.webhook_stats(&bot_name(bot)) {
                let held = stats.counts.pending + stats.counts.in_flight;
                assert!(held as usize <= self.bounds.queue_capacity, "{}: {held} held", bot_name(bot));
                total += held;
            }
        }
        assert!(total as usize <= self.bounds.max_pending_events, "{total} held in all");
    }

    fn finish(mut self) {
        self.harness.core.close();
        let undelivered = self.harness.core.take_undelivered();
        self.hand_back(undelivered);
        self.take_notices();
        let accounted: HashSet<_> = self.delivered.union(&self.dropped).cloned().collect();
        assert_eq!(accounted, self.accepted, "every accepted event was delivered or handed back");
        let totals = self.harness.core.stats().totals;
        assert!(totals.is_balanced());
        assert_eq!((totals.pending, totals.in_flight), (0, 0));
        let mut per_reason: HashMap<&str, u64> = HashMap::new();
        for reason in eventhook::dispatch::DropReason::ALL {
            per_reason.insert(reason.name(), totals.dropped(reason));
        }
        assert_eq!(totals.dropped_total() as usize, self.dropped.len(), "{per_reason:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_event_is_accounted_for_and_none_is_delivered_twice(steps in prop::collection::vec(step(), 1..120)) {
        let mut simulation = Simulation::new(SMALL);
        for step in steps {
            simulation.run(step);
            simulation.check_bounds();
        }
        simulation.finish();
    }
}

proptest! {
    // Each case moves thousands of events: fewer cases, as long in all.
    #![proptest_config(ProptestConfig { cases: 60, ..ProptestConfig::default() })]

    /// Issue 16: the same with bounds above the intake's ring, where most
    /// events are counted by the core, not by `enqueue`. (It found a webhook
    /// filled while every event was counted that was not crowded once the
    /// global crowding ended, and so took a ring of uncounted events more.)
    #[test]
    fn with_large_bounds_every_event_is_accounted_for_and_the_bounds_hold(steps in prop::collection::vec(step(), 1..80)) {
        let mut simulation = Simulation::new(LARGE);
        for step in steps {
            simulation.run(step);
            simulation.check_bounds();
        }
        simulation.finish();
    }
}
