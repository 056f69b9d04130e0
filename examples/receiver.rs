//! A small events webhook receiver for bot owners, on axum.
//!
//! ```text
//! cargo run --example receiver --features axum -- --listen 127.0.0.1:8080 --secret <bot API secret>
//! EVENTHOOK_SECRET=<bot API secret> cargo run --example receiver --features axum
//! EVENTHOOK_SECRET=<bot API secret> EVENTHOOK_SIGNING_SECRET=whsec_... cargo run --example receiver --features axum
//! ```
//!
//! Prefer the environment variables: a command-line argument is visible to
//! other local users in the process list. With a signing secret
//! (`--signing-secret`, as many as the webhook signs with during a
//! rotation), every push must also carry a valid Standard Webhooks
//! signature, and the summary line shows its `webhook-id`.
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
use eventhook::{BotSecret, Event, SigningSecret};
use http::StatusCode;

const USAGE: &str = "usage: receiver [--listen ADDR] [--secret SECRET] [--signing-secret whsec_...]...

  --listen ADDR             address to listen on (default 127.0.0.1:8080)
  --secret SECRET           the bot API secret expected as bearer token
                            (default: the EVENTHOOK_SECRET environment variable)
  --signing-secret SECRET   a Standard Webhooks secret (whsec_...) pushes must be
                            signed with; repeat it during a rotation (default: the
                            EVENTHOOK_SIGNING_SECRET environment variable, or none)";

struct Options {
    listen: SocketAddr,
    secret: BotSecret,
    signing_secrets: Vec<SigningSecret>,
}

fn parse_options(arguments: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut listen = None;
    let mut secret = None;
    let mut signing_secrets = Vec::new();
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
            "--signing-secret" => signing_secrets.push(value("--signing-secret")?),
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
    if signing_secrets.is_empty() {
        signing_secrets.extend(std::env::var("EVENTHOOK_SIGNING_SECRET").ok());
    }
    let signing_secrets = signing_secrets
        .iter()
        .map(|text| SigningSecret::new(text).map_err(|error| error.to_string()))
        .collect::<Result<_, _>>()?;
    Ok(Options { listen, secret, signing_secrets })
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
            match &push.webhook_id {
                // A host would drop a push whose id it already processed (a retry of a call it took in).
                Some(id) => println!("{}; webhook-id {id}", summary(&push.events)),
                None => println!("{}", summary(&push.events)),
            }
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
    let signed = !options.signing_secrets.is_empty();
    let receiver = WebhookReceiver::new(options.secret).signing_secrets(options.signing_secrets);
    let app = Router::new().route("/events", post(events)).with_state(receiver);
    let listener = match tokio::net::TcpListener::bind(options.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {}: {error}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    let address = listener.local_addr().unwrap_or(options.listen);
    let checks = if signed { "bearer and signature checked" } else { "bearer checked" };
    println!("listening on http://{address}/events (POST events here; {checks})");
    if let Err(error) = axum::serve(listener, app).await {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
