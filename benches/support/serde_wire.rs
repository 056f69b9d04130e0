//! The serde model a user would write for the wire format:
//! `#[derive(Serialize)]` structs named like the wire's keys, with
//! `skip_serializing_if` and dates written by chrono's `to_rfc3339_opts`.
//! The `encode` bench's baseline and the naive user's encoder in `end_to_end`.

use chrono::SecondsFormat;
use eventhook::{Event, EventDate};
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;

/// One event as the obvious serde model has it: every wire field, optional
/// ones skipped when absent, in the wire's order.
#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
struct WireEvent<'a> {
    r#type: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_sub_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    date: Option<String>,
    bot_token: &'a str,
    account_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

fn rfc3339(date: EventDate) -> String {
    date.to_datetime().to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

fn to_wire(event: &Event) -> WireEvent<'_> {
    let origin = event.origin().expect("known kinds only");
    let mut wire = WireEvent {
        r#type: event.code(),
        bot_token: &origin.bot_token,
        account_name: &origin.account_name,
        ..WireEvent::default()
    };
    match event {
        Event::BotMessage(message) | Event::UserMessage(message) => {
            wire.item_type = message.item_type.as_deref();
            wire.item_sub_type = message.item_sub_type.as_deref();
            wire.data = Some(&message.data);
            wire.date = Some(rfc3339(message.date));
            wire.conversation_id = Some(&message.conversation_id);
            wire.user_name = message.user_name.as_deref();
            wire.channel = Some(&message.channel);
        }
        Event::IntentUpdated(change)
        | Event::IntentDeleted(change)
        | Event::EntityUpdated(change)
        | Event::EntityDeleted(change) => {
            wire.date = change.date.map(rfc3339);
            wire.name = Some(&change.name);
            wire.key = Some(&change.key);
        }
        Event::NlpMissed(missed) => {
            wire.date = missed.date.map(rfc3339);
            wire.conversation_id = missed.conversation_id.as_deref();
            wire.user_name = missed.user_name.as_deref();
            wire.channel = missed.channel.as_deref();
            wire.text = Some(&missed.text);
        }
        Event::ConversationError(conversation)
        | Event::NewUser(conversation)
        | Event::ReturningUser(conversation)
        | Event::TakeOver(conversation)
        | Event::HandOver(conversation)
        | Event::Fallback(conversation)
        | Event::WrongAnswer(conversation) => {
            wire.data = conversation.data.as_deref();
            wire.date = conversation.date.map(rfc3339);
            wire.conversation_id = Some(&conversation.conversation_id);
            wire.user_name = conversation.user_name.as_deref();
            wire.channel = conversation.channel.as_deref();
        }
        Event::Unknown(_) => unreachable!("the bench builds known kinds only"),
    }
    wire
}

/// The events as a JSON array, without collecting the structs first.
struct AsWire<'a>(&'a [Event]);

impl Serialize for AsWire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for event in self.0 {
            seq.serialize_element(&to_wire(event))?;
        }
        seq.end()
    }
}

pub fn serde_encode(events: &[Event]) -> Vec<u8> {
    serde_json::to_vec(&AsWire(events)).expect("serializable")
}
