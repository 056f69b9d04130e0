//! Issue 11: a password given in a URL (`http://user:PASSWORD@host/`) never
//! shows in the `Display` or `Debug` of an error that can hold a URL.

use eventhook::dispatch::CallOutcome;
use eventhook::{ConfigError, TransportError, TransportErrorKind, WebhookConfig, WebhookUrl};

const PASSWORD: &str = "PASSWORD-in-the-url";

/// URLs carrying the password, valid or not for other reasons too.
fn urls() -> Vec<String> {
    [
        "http://user:{}@hooks.example.com/",
        "https://user:{}@hooks.example.com:8443/bot?x=1",
        "https://{}@hooks.example.com/",
        "ftp://user:{}@hooks.example.com/",
        "https://user:{}@hooks.example.com/#fragment",
        "user:{}@hooks.example.com/hook",
        "http://user:{}@[::1]:8080/",
    ]
    .iter()
    .map(|form| form.replace("{}", PASSWORD))
    .collect()
}

fn assert_hidden(what: &str, shown: &[String]) {
    for text in shown {
        assert!(!text.contains(PASSWORD), "{what} shows the password: {text}");
    }
}

#[test]
fn config_errors_never_show_the_password() {
    for url in urls() {
        let error = WebhookUrl::parse(&url).expect_err("user-info is refused");
        assert!(matches!(error, ConfigError::InvalidUrl { .. }), "{error:?}");
        assert_hidden(&url, &[error.to_string(), format!("{error:?}")]);
        assert!(error.to_string().contains("***@"), "{error}");

        let built = WebhookConfig::builder("bot", "Account", url.as_str(), "secret").build();
        let error = built.expect_err("user-info is refused");
        assert_hidden(&url, &[error.to_string(), format!("{error:?}")]);
    }
}

#[test]
fn transport_errors_and_call_outcomes_never_show_the_password() {
    // In free text a URL is recognised by its `://`; transports write absolute URLs.
    for url in urls().into_iter().filter(|url| url.contains("://")) {
        let message = format!("error sending request for url ({url}): connection refused");
        let error = TransportError::new(TransportErrorKind::Connect, message);
        let outcome = CallOutcome::FailedTransport(error.clone());
        assert_hidden(&url, &[error.to_string(), format!("{error:?}"), outcome.to_string(), format!("{outcome:?}")]);
    }
}

/// The reqwest transport used directly, with a request the dispatcher would
/// never build: its errors come from reqwest, which prints the URL.
#[cfg(all(feature = "reqwest", feature = "tokio"))]
#[tokio::test]
async fn reqwest_errors_never_show_the_password() {
    use eventhook::adapters::ReqwestTransport;
    use eventhook::Transport;

    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).unwrap().port();
    let transport = ReqwestTransport::builder().allow_private_networks(true).build().unwrap();
    let guarded = ReqwestTransport::new().unwrap();
    let url = format!("http://user:{PASSWORD}@127.0.0.1:{port}/hook");
    for transport in [&transport, &guarded] {
        let request = http::Request::post(url.as_str()).body(Vec::new()).unwrap();
        let sent = tokio::time::timeout(std::time::Duration::from_secs(10), transport.send(request)).await;
        let error = sent.expect("refused at once").expect_err("nobody listens");
        assert_hidden(&url, &[error.to_string(), format!("{error:?}")]);
    }
}
