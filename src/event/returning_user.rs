//! The 24-hour rule for `ReturningUser` events.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Decides whether a `ReturningUser` event (type 9) may fire: at most once
/// per window (24 hours by default) per user of a bot, as the platform does.
///
/// Memory is bounded: it remembers at most `capacity` users (about 40 bytes
/// each). When full it forgets the users who fired longest ago, who may then
/// fire again early; it never suppresses an event it should send because of
/// the bound. Keys are 64-bit hashes of bot and user, so the user ids are
/// not kept.
///
/// ```
/// use std::time::{Duration, Instant};
/// use eventhook::ReturningUserGate;
///
/// let gate = ReturningUserGate::new(100_000);
/// let morning = Instant::now();
/// assert!(gate.should_fire("bot", "user-1", morning));
/// assert!(!gate.should_fire("bot", "user-1", morning + Duration::from_secs(3600)));
/// assert!(gate.should_fire("other-bot", "user-1", morning)); // per bot
/// assert!(gate.should_fire("bot", "user-1", morning + Duration::from_secs(24 * 3600)));
/// ```
#[derive(Debug)]
pub struct ReturningUserGate {
    window: Duration,
    capacity: usize,
    state: Mutex<RememberedUsers>,
}

#[derive(Debug, Default)]
struct RememberedUsers {
    last_fired: HashMap<u64, Instant>,
    /// Firing order, oldest first, to expire and evict without a scan.
    order: VecDeque<(u64, Instant)>,
}

impl RememberedUsers {
    fn forget_oldest(&mut self) {
        if let Some((key, fired)) = self.order.pop_front() {
            if self.last_fired.get(&key) == Some(&fired) {
                self.last_fired.remove(&key);
            }
        }
    }
}

impl ReturningUserGate {
    /// The platform's window: 24 hours.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

    /// A gate with the 24-hour window remembering at most `capacity` users (at least 1).
    pub fn new(capacity: usize) -> ReturningUserGate {
        ReturningUserGate::with_window(capacity, Self::DEFAULT_WINDOW)
    }

    /// A gate with another window.
    pub fn with_window(capacity: usize, window: Duration) -> ReturningUserGate {
        ReturningUserGate { window, capacity: capacity.max(1), state: Mutex::new(RememberedUsers::default()) }
    }

    /// Whether `user_id` of `bot_token`, returning at `now`, should fire a
    /// `ReturningUser` event. A `true` is remembered: the next `true` for the
    /// same user comes a window later.
    pub fn should_fire(&self, bot_token: &str, user_id: &str, now: Instant) -> bool {
        let key = user_key(bot_token, user_id);
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(&(_, fired)) = state.order.front() {
            if now.saturating_duration_since(fired) < self.window {
                break;
            }
            state.forget_oldest();
        }
        if let Some(&fired) = state.last_fired.get(&key) {
            if now.saturating_duration_since(fired) < self.window {
                return false;
            }
        }
        state.last_fired.insert(key, now);
        state.order.push_back((key, now));
        while state.last_fired.len() > self.capacity {
            state.forget_oldest();
        }
        true
    }

    /// How many users it remembers now.
    pub fn remembered(&self) -> usize {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).last_fired.len()
    }
}

fn user_key(bot_token: &str, user_id: &str) -> u64 {
    // SipHash with fixed keys: stable, and strong enough that collisions are negligible.
    let mut hasher = std::hash::DefaultHasher::new();
    bot_token.hash(&mut hasher);
    user_id.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_per_window_per_user() {
        let gate = ReturningUserGate::with_window(10, Duration::from_secs(100));
        let start = Instant::now();
        assert!(gate.should_fire("bot", "ada", start));
        assert!(!gate.should_fire("bot", "ada", start + Duration::from_secs(99)));
        assert!(gate.should_fire("bot", "bob", start + Duration::from_secs(50)));
        assert!(gate.should_fire("bot", "ada", start + Duration::from_secs(100)));
        assert!(!gate.should_fire("bot", "bob", start + Duration::from_secs(149)));
        assert!(gate.should_fire("bot", "bob", start + Duration::from_secs(150)));
    }

    #[test]
    fn memory_stays_bounded_and_expired_users_are_forgotten() {
        let gate = ReturningUserGate::with_window(1000, Duration::from_secs(10));
        let start = Instant::now();
        for user in 0..10_000 {
            assert!(gate.should_fire("bot", &user.to_string(), start));
            assert!(gate.remembered() <= 1000);
        }
        // The most recent users are still remembered.
        assert!(!gate.should_fire("bot", "9999", start + Duration::from_secs(1)));
        // After the window, everything expires on the next call.
        assert!(gate.should_fire("bot", "new", start + Duration::from_secs(11)));
        assert_eq!(gate.remembered(), 1);
    }
}
