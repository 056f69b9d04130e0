//! A small events webhook receiver for bot owners, on axum.
//!
//! ```text
//! cargo run --example receiver --features axum -- --listen 127.0.0.1:8080 --secret <bot API secret>
//! EVENTHOOK_SECRET=<bot API secret> cargo run --example receiver --features axum
//! ```
//!
//! Prefer `EVENTHOOK_SECRET`: a command-line argument is visible to other
//! local users in the process list.
//!
//! It answers POSTs on `/events`. It prints one line when listening, then one summary line per verified
//! push, and answers `200 OK` to verified pushes; `401`, `413` or `400`
//! otherwise, as [`VerifiedPush`] does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use axum::routing::post;
use axum::Router;
use eventhook::receiver::{PushRejection, VerifiedPush, WebhookReceiver};
use eventhook::{BotSecret, Event};
use http::StatusCode;

const USAGE: &str = "usage: receiver [--listen ADDR] [--secret SECRET]

  --listen ADDR    address to listen on (default 127.0.0.1:8080)
  --secret SECRET  the bot API secret expected as bearer token
                   (default: the EVENTHOOK_SECRET environment variable)";

struct Options {
    listen: SocketAddr,
    secret: BotSecret,
}

fn parse_options(arguments: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut listen = None;
    let mut secret = None;
    let mut arguments = arguments.peekable();
    while let Some(argument) = arguments.next() {
        let (name, inline_value) = match argument.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_owned(), Some(value.to_owned())),
            _ => (argument.clone(), None),
        };
        let mut value = |name: &str| {
            inline_value.clone().or_else(|| arguments.next()).ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--listen" => listen = Some(value("--listen")?),
            "--secret" => secret = Some(value("--secret")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let listen_text = listen.unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listen = listen_text
        .parse::<SocketAddr>()
        .map_err(|_| format!("--listen {listen_text:?} is not an address such as 127.0.0.1:8080"))?;
    let secret = match secret {
        Some(secret) => secret,
        None => std::env::var("EVENTHOOK_SECRET")
            .map_err(|_| "no bot secret: pass --secret SECRET or set EVENTHOOK_SECRET".to_owned())?,
    };
    let secret = BotSecret::new(secret).map_err(|error| error.to_string())?;
    Ok(Options { listen, secret })
}

/// One line: how many events, of which kinds, from which bots.
fn summary(events: &[Event]) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut bots: BTreeMap<&str, usize> = BTreeMap::new();
    for event in events {
        let kind = match event.kind() {
            Some(kind) => format!("{kind:?}"),
            None => format!("Unknown(Type {})", event.code()),
        };
        *kinds.entry(kind).or_default() += 1;
        *bots.entry(event.bot_token().unwrap_or("?")).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(kind, count)| format!("{kind} x{count}")).collect();
    let bots: Vec<&str> = bots.keys().copied().collect();
    let with_variables = events.iter().filter(|event| !event.variables().is_empty()).count();
    format!(
        "push: {} events; kinds: {}; bots: {}; {with_variables} with variables",
        events.len(),
        kinds.join(", "),
        bots.join(", ")
    )
}

async fn events(push: Result<VerifiedPush, PushRejection>) -> Result<StatusCode, PushRejection> {
    match push {
        Ok(push) => {
            println!("{}", summary(&push.events));
            Ok(StatusCode::OK)
        }
        Err(rejection) => {
            eprintln!("refused ({}): {}", rejection.status(), rejection.error());
            Err(rejection)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let receiver = WebhookReceiver::new(options.secret);
    let app = Router::new().route("/events", post(events)).with_state(receiver);
    let listener = match tokio::net::TcpListener::bind(options.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {}: {error}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    let address = listener.local_addr().unwrap_or(options.listen);
    println!("listening on http://{address}/events (POST events here)");
    if let Err(error) = axum::serve(listener, app).await {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
