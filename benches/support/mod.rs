//! Shared pieces of the benchmarks: deterministic realistic events, webhook
//! settings, criterion settings and the same-run ratio report.
//!
//! Every bench file includes this module with `mod support;`, and none uses
//! all of it.
#![allow(dead_code)]

pub mod callgrind;
pub mod loopback;
pub mod serde_wire;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone};
use criterion::Criterion;
use eventhook::{
    CatalogChange, ConversationEvent, Event, EventDate, Message, MissedText, Origin, WebhookConfig,
    WebhookConfigBuilder,
};

/// A tiny xorshift64* generator: deterministic, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.below((high - low + 1) as u64) as usize
    }

    /// True `percent` times in 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The bot token of bot number `bot`: a GUID, as the platform's tokens are.
pub fn bot_token(bot: usize) -> String {
    guid((bot as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15), 'a', bot as u64)
}

/// A GUID-shaped string: digits from `hash`, `variant` as the fourth
/// group's first digit, and `tail` readable in the last group.
fn guid(hash: u64, variant: char, tail: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{variant}{:03x}-{tail:012x}",
        hash >> 32,
        (hash >> 16) & 0xffff,
        hash & 0xfff,
        (hash >> 20) & 0xfff,
    )
}

pub fn account_name(bot: usize) -> String {
    const SUFFIXES: [&str; 4] = ["Srl", "S.p.A.", "Ltd", "GmbH"];
    format!("Account {} {}", bot, SUFFIXES[bot % SUFFIXES.len()])
}

/// A bot API secret: 40 characters.
pub fn secret(bot: usize) -> String {
    format!("sk-{:037x}", (bot as u128 + 1).wrapping_mul(0x0123_4567_89ab_cdef_0123_4567))
}

/// Default settings of bot number `bot`'s webhook at `base_url` (path `/hooks/<token>`).
pub fn webhook_config(bot: usize, base_url: &str) -> WebhookConfigBuilder {
    let token = bot_token(bot);
    let url = format!("{base_url}/hooks/{token}");
    WebhookConfig::builder(token, account_name(bot), url, secret(bot))
}

pub const EXAMPLE_BASE_URL: &str = "https://hooks.example.com";

const ASCII_WORDS: [&str; 40] = [
    "hello", "there", "I", "would", "like", "to", "book", "a", "table", "for", "two", "people", "tomorrow", "evening",
    "please", "can", "you", "help", "me", "with", "my", "order", "number", "the", "delivery", "was", "late", "again",
    "thanks", "what", "are", "your", "opening", "hours", "on", "Sunday", "refund", "account", "password", "reset",
];

const MIXED_WORDS: [&str; 24] = [
    "perché",
    "città",
    "è",
    "già",
    "così",
    "più",
    "caffè",
    "grazie",
    "señor",
    "mañana",
    "Zoë",
    "naïve",
    "crème",
    "brûlée",
    "Größe",
    "straße",
    "你好",
    "谢谢",
    "こんにちは",
    "привет",
    "👋",
    "✓",
    "🙂",
    "€",
];

const CHANNELS: [&str; 5] = ["TelegramChannel", "WebChannel", "FacebookChannel", "WhatsAppChannel", "SlackChannel"];
const USER_NAMES: [&str; 8] = ["Ada", "José", "Zoë Müller", "李雷", "Marco Rossi", "Ann O'Neil", "Björk", "Sam"];
const INTENTS: [&str; 6] = ["Greeting", "Order status", "Opening hours", "Refund", "Talk to a human", "Prenotazione"];

/// Builds realistic events: mostly chat messages, every kind present, texts
/// of 50-500 bytes, some non-ASCII and some needing JSON escapes, dates with
/// 100 ns ticks and a few non-UTC offsets.
#[derive(Debug, Clone)]
pub struct EventGen {
    rng: Rng,
    base: DateTime<FixedOffset>,
}

impl EventGen {
    pub fn new(seed: u64) -> EventGen {
        let base = FixedOffset::east_opt(0).unwrap().with_ymd_and_hms(2019, 7, 10, 15, 47, 58).unwrap();
        EventGen { rng: Rng::new(seed), base }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A text of about `low..=high` bytes (ends on a whole word).
    pub fn text(&mut self, low: usize, high: usize) -> String {
        let target = self.rng.between(low, high);
        let mixed = self.rng.chance(30);
        let mut text = String::with_capacity(target + 16);
        while text.len() < target {
            if !text.is_empty() {
                text.push(' ');
            }
            let word =
                if mixed && self.rng.chance(20) { self.rng.pick(&MIXED_WORDS) } else { self.rng.pick(&ASCII_WORDS) };
            text.push_str(word);
            match self.rng.below(200) {
                0 => text.push_str(" \"quoted\""),
                1 => text.push('\n'),
                2 => text.push_str(" C:\\path"),
                3..=12 => text.push(','),
                13..=18 => text.push('?'),
                _ => {}
            }
        }
        if text.len() > high {
            let mut cut = high;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        text
    }

    fn date(&mut self, seq: u64) -> EventDate {
        let ticks = self.rng.below(10_000_000) as i64;
        let instant =
            self.base + chrono::Duration::milliseconds(seq as i64 * 7) + chrono::Duration::nanoseconds(ticks * 100);
        let offset = match self.rng.below(10) {
            0 => FixedOffset::east_opt(2 * 3600).unwrap(),
            1 => FixedOffset::west_opt(5 * 3600).unwrap(),
            _ => FixedOffset::east_opt(0).unwrap(),
        };
        EventDate::new(instant.with_timezone(&offset)).expect("recent dates, whole-minute offsets")
    }

    /// A conversation id (a GUID) whose last group is `seq`, so a receiver
    /// can tell events apart; see [`event_seq`].
    fn conversation_id(&mut self, seq: u64) -> String {
        guid(self.rng.next_u64(), 'b', seq)
    }

    /// One event of bot number `bot`, carrying `seq` (see [`event_seq`]).
    pub fn event(&mut self, bot: usize, seq: u64) -> Event {
        let origin = Origin::new(bot_token(bot), account_name(bot));
        self.event_for(origin, seq)
    }

    /// One event from `origin`, carrying `seq` (see [`event_seq`]).
    pub fn event_for(&mut self, origin: Origin, seq: u64) -> Event {
        let date = self.date(seq);
        let channel = (*self.rng.pick(&CHANNELS)).to_owned();
        let user_name = self.rng.chance(70).then(|| (*self.rng.pick(&USER_NAMES)).to_owned());
        let conversation_id = self.conversation_id(seq);
        let roll = self.rng.below(100);
        if roll < 70 {
            let mut message = Message::new(origin, conversation_id, channel, self.text(50, 500), date);
            message.user_name = user_name;
            if roll < 35 {
                return Event::UserMessage(message);
            }
            if self.rng.chance(60) {
                message.item_type = Some("Text".to_owned());
            }
            if self.rng.chance(10) {
                message.item_sub_type = Some("QuickReply".to_owned());
            }
            return Event::BotMessage(message);
        }
        if roll < 76 {
            let mut missed = MissedText::new(origin, self.text(50, 200)).date(date);
            if self.rng.chance(80) {
                missed.conversation_id = Some(conversation_id);
                missed.channel = Some(channel);
                missed.user_name = user_name;
            } else {
                missed.conversation_id = Some(conversation_id);
            }
            return Event::NlpMissed(missed);
        }
        if roll < 80 {
            let name = (*self.rng.pick(&INTENTS)).to_owned();
            let key = format!("key-{seq:012x}");
            let change = CatalogChange::new(origin, name, key);
            let change = if self.rng.chance(70) { change.date(date) } else { change };
            return match self.rng.below(4) {
                0 => Event::IntentUpdated(change),
                1 => Event::IntentDeleted(change),
                2 => Event::EntityUpdated(change),
                _ => Event::EntityDeleted(change),
            };
        }
        let mut conversation = ConversationEvent::new(origin, conversation_id).date(date).channel(channel);
        conversation.user_name = user_name;
        match roll {
            80..=82 => Event::ConversationError(conversation.data(format!("Timeout calling {}", self.text(20, 120)))),
            83..=87 => Event::NewUser(conversation),
            88..=90 => Event::ReturningUser(conversation),
            91..=92 => Event::TakeOver(conversation),
            93..=94 => Event::HandOver(conversation),
            95..=97 => Event::Fallback(conversation),
            _ => Event::WrongAnswer(conversation),
        }
    }

    /// `count` events of bots picked among `bots`, numbered from `first_seq`.
    pub fn events(&mut self, count: usize, bots: usize, first_seq: u64) -> Vec<Event> {
        (0..count)
            .map(|index| {
                let bot = self.rng.below(bots as u64) as usize;
                self.event(bot, first_seq + index as u64)
            })
            .collect()
    }
}

/// The `seq` an event of [`EventGen`] carries (last group of its
/// conversation id, or of its key for intent and entity changes).
pub fn event_seq(event: &Event) -> Option<u64> {
    let carrier = match event {
        Event::BotMessage(message) | Event::UserMessage(message) => message.conversation_id.as_str(),
        Event::IntentUpdated(change)
        | Event::IntentDeleted(change)
        | Event::EntityUpdated(change)
        | Event::EntityDeleted(change) => change.key.as_str(),
        Event::NlpMissed(missed) => missed.conversation_id.as_deref()?,
        Event::ConversationError(conversation)
        | Event::NewUser(conversation)
        | Event::ReturningUser(conversation)
        | Event::TakeOver(conversation)
        | Event::HandOver(conversation)
        | Event::Fallback(conversation)
        | Event::WrongAnswer(conversation) => conversation.conversation_id.as_str(),
        Event::Unknown(_) => return None,
    };
    u64::from_str_radix(carrier.rsplit('-').next()?, 16).ok()
}

/// 100 realistic events of a few bots: the push of the codec benches.
pub fn push_events() -> Vec<Event> {
    EventGen::new(0x5eed).events(100, 3, 0)
}

/// Reduced criterion settings: the machine has 2 shared cores.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args()
}

/// The median of some durations.
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Times `crate_side` and `baseline` in alternating blocks of `per_block`
/// samples (`blocks` blocks each) and returns the median sample of each.
/// Each closure runs one sample of work and returns the time it measured.
///
/// Alternating blocks spread the load of other processes on this shared
/// machine over both sides; the first tenth of each block is dropped (caches
/// warming up after the other side ran), and medians ignore preempted samples.
pub fn interleaved(
    blocks: usize,
    per_block: usize,
    mut crate_side: impl FnMut() -> Duration,
    mut baseline: impl FnMut() -> Duration,
) -> (Duration, Duration) {
    let skip = per_block / 10;
    let mut crate_times = Vec::with_capacity(blocks * per_block);
    let mut baseline_times = Vec::with_capacity(blocks * per_block);
    for _ in 0..blocks {
        for index in 0..per_block {
            let time = crate_side();
            if index >= skip {
                crate_times.push(time);
            }
        }
        for index in 0..per_block {
            let time = baseline();
            if index >= skip {
                baseline_times.push(time);
            }
        }
    }
    (median(crate_times), median(baseline_times))
}

/// "; criterion means give N.NNx", the ratio of the criterion mean estimates
/// of `numerator` to `denominator` in `group`, or nothing when either is missing.
pub fn criterion_ratio_detail(group: &str, numerator: &str, denominator: &str) -> String {
    match (criterion_mean_ns(group, numerator), criterion_mean_ns(group, denominator)) {
        (Some(numerator), Some(denominator)) => format!("; criterion means give {:.2}x", numerator / denominator),
        _ => String::new(),
    }
}

/// Criterion's mean estimate for `group/id` in this run, in nanoseconds per
/// iteration, if it can be found (`$CARGO_TARGET_DIR` or `./target`).
pub fn criterion_mean_ns(group: &str, id: &str) -> Option<f64> {
    let root = std::env::var_os("CRITERION_HOME").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from).join("criterion")
    });
    let path = root.join(group).join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["mean"]["point_estimate"].as_f64()
}

/// Whether a measured ratio meets its goal.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// The crate's time at most this many times the baseline's.
    AtMost(f64),
    /// The crate at least this many times faster (baseline time / crate time).
    AtLeast(f64),
    /// No goal: the crate's time over the baseline's, reported beside it.
    Reported,
}

impl Goal {
    pub fn met(self, ratio: f64) -> bool {
        match self {
            Goal::AtMost(limit) => ratio <= limit,
            Goal::AtLeast(limit) => ratio >= limit,
            Goal::Reported => true,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Goal::AtMost(limit) => format!("<= {limit}x"),
            Goal::AtLeast(limit) => format!(">= {limit}x"),
            Goal::Reported => "none".to_owned(),
        }
    }
}

/// Prints one line of the final report: the figures, the ratio and PASS/FAIL.
pub fn report(name: &str, what: &str, ratio: f64, goal: Goal, detail: &str) {
    let verdict = match goal {
        Goal::Reported => "INFO",
        _ if goal.met(ratio) => "PASS",
        _ => "FAIL",
    };
    println!("RESULT {name:<28} {what:<34} ratio {ratio:>6.2}  goal {:<8} {verdict}  ({detail})", goal.describe());
}

/// Times one push-sized operation of the crate against its baseline in
/// alternating blocks and prints the `RESULT` line, with criterion's own
/// ratio beside it: for a "how many times faster" goal ([`Goal::AtLeast`])
/// the baseline's time over the crate's, for a "at most this many times the
/// baseline's time" goal ([`Goal::AtMost`], [`Goal::Reported`]) the crate's
/// over the baseline's.
pub struct SpeedupCheck<'a> {
    pub name: &'a str,
    pub what: &'a str,
    pub group: &'a str,
    pub crate_id: &'a str,
    pub baseline_id: &'a str,
    pub goal: Goal,
    /// Instructions per push of both sides, under the same ids.
    pub instructions: &'a callgrind::Counts,
}

impl SpeedupCheck<'_> {
    pub fn run(&self, mut crate_side: impl FnMut(), mut baseline: impl FnMut()) {
        let once = |work: &mut dyn FnMut()| {
            let start = std::time::Instant::now();
            work();
            start.elapsed()
        };
        let (ours, theirs) = interleaved(20, 200, || once(&mut crate_side), || once(&mut baseline));
        let faster = matches!(self.goal, Goal::AtLeast(_));
        let (ratio, criterion_detail) = if faster {
            (
                theirs.as_secs_f64() / ours.as_secs_f64(),
                criterion_ratio_detail(self.group, self.baseline_id, self.crate_id),
            )
        } else {
            (
                ours.as_secs_f64() / theirs.as_secs_f64(),
                criterion_ratio_detail(self.group, self.crate_id, self.baseline_id),
            )
        };
        let instructions = self.instructions.detail(self.crate_id, self.baseline_id, faster);
        println!();
        report(
            self.name,
            self.what,
            ratio,
            self.goal,
            &format!(
                "{:.1} µs vs {:.1} µs per push{criterion_detail}{instructions}",
                ours.as_secs_f64() * 1e6,
                theirs.as_secs_f64() * 1e6
            ),
        );
    }
}

/// Nanoseconds per element.
pub fn per_element(time: Duration, elements: u64) -> f64 {
    time.as_nanos() as f64 / elements.max(1) as f64
}

/// Prints one line of the final report for an absolute figure with an upper bound.
pub fn report_line(name: &str, value: f64, limit: f64, what: &str) {
    let verdict = if value <= limit { "PASS" } else { "FAIL" };
    println!("RESULT {name:<28} {what:<46} {value:>8.1}  goal <= {limit} {verdict}");
}

/// Whether this is a real benchmark run (`cargo bench` passes `--bench`),
/// not `cargo test --benches`, which runs bench targets once as smoke tests.
pub fn is_bench_run() -> bool {
    std::env::args().any(|argument| argument == "--bench")
}
