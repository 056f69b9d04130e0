//! Alerts: how the account hears that its webhook was disabled.

use std::fmt;

use chrono::{DateTime, Utc};

/// Told when a webhook is disabled after too many failed calls in a row.
///
/// The platform e-mails the account at this point; the host decides what to
/// do (e-mail, ticket, dashboard). Called exactly once per disabling, from
/// the dispatcher's task: return quickly, and hand slow work to a queue of
/// your own.
///
/// ```
/// use eventhook::{AlertSink, WebhookDisabledAlert};
///
/// #[derive(Debug)]
/// struct PrintAlerts;
///
/// impl AlertSink for PrintAlerts {
///     fn webhook_disabled(&self, alert: &WebhookDisabledAlert) {
///         eprintln!("{alert}");
///     }
/// }
/// ```
pub trait AlertSink: Send + Sync + fmt::Debug + 'static {
    /// The webhook of `alert.bot_token` was disabled.
    fn webhook_disabled(&self, alert: &WebhookDisabledAlert);
}

/// What an [`AlertSink`] is told when a webhook is disabled. Holds no secret.
///
/// Its `Display` is a message ready for the account (the platform sends it
/// by e-mail):
///
/// ```
/// use eventhook::WebhookDisabledAlert;
///
/// let alert = WebhookDisabledAlert {
///     bot_token: "bot-1".to_owned(),
///     account_name: "Matelab Srl".to_owned(),
///     url: "https://hooks.example.com/events".to_owned(),
///     failures_in_row: 11,
///     last_failure: "answered 500 Internal Server Error".to_owned(),
///     disabled_at: "2019-07-10T15:47:58Z".parse().unwrap(),
/// };
/// let mail = alert.to_string();
/// assert!(mail.starts_with("events webhook of bot bot-1 (account \"Matelab Srl\") disabled at 2019-07-10T15:47:58+00:00"));
/// assert!(mail.ends_with("Save the bot's settings again to re-enable it."));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDisabledAlert {
    /// The bot whose webhook was disabled.
    pub bot_token: String,
    /// The account to alert.
    pub account_name: String,
    /// The webhook URL that kept failing.
    pub url: String,
    /// How many calls failed in a row.
    pub failures_in_row: u32,
    /// Why the last call failed.
    pub last_failure: String,
    /// When the webhook was disabled.
    pub disabled_at: DateTime<Utc>,
}

impl WebhookDisabledAlert {
    /// A stable id of this alert: the same each time the same disabling is
    /// reported, so a sink can ignore a repeat (a process of a cluster that
    /// dies after delivering an alert and before marking it delivered leaves
    /// it to another, which delivers it again).
    pub fn alert_id(&self) -> String {
        format!("{}@{}", self.bot_token, self.disabled_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
    }
}

impl fmt::Display for WebhookDisabledAlert {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "events webhook of bot {} (account {:?}) disabled at {} after {} failed calls in a row to {}; last failure: {}. Save the bot's settings again to re-enable it.",
            self.bot_token,
            self.account_name,
            self.disabled_at.to_rfc3339(),
            self.failures_in_row,
            self.url,
            self.last_failure
        )
    }
}

/// An [`AlertSink`] that ignores alerts (they still show in the stats).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAlerts;

impl AlertSink for NoAlerts {
    fn webhook_disabled(&self, _alert: &WebhookDisabledAlert) {}
}
