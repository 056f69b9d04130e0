//! The axum extractor against a real server on 127.0.0.1 and a real client.
#![cfg(feature = "axum")]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::routing::post;
use axum::Router;
use eventhook::receiver::{VerifiedPush, WebhookReceiver, UNAUTHORIZED_MESSAGE};
use eventhook::{BotSecret, CatalogChange, ConversationEvent, Event, EventDate, Message, MissedText, Origin};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "bot-api-secret-value";
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone)]
struct AppState {
    receiver: WebhookReceiver,
    received: Arc<Mutex<Vec<Vec<Event>>>>,
}

impl FromRef<AppState> for WebhookReceiver {
    fn from_ref(state: &AppState) -> WebhookReceiver {
        state.receiver.clone()
    }
}

async fn handler(State(state): State<AppState>, push: VerifiedPush) -> StatusCode {
    state.received.lock().expect("lock").push(push.events);
    StatusCode::OK
}

struct Server {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Vec<Event>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(max_body_bytes: usize) -> Server {
        let receiver = WebhookReceiver::new(BotSecret::new(SECRET).expect("secret")).max_body_bytes(max_body_bytes);
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = AppState { receiver, received: received.clone() };
        let app = Router::new().route("/", post(handler)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Server { address, received, task }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    fn pushes(&self) -> Vec<Vec<Event>> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client")
}

async fn post_body(server: &Server, authorization: Option<&str>, body: Vec<u8>) -> (StatusCode, String, bool) {
    let mut request =
        client().post(server.url()).header(http::header::CONTENT_TYPE, "application/json; charset=utf-8").body(body);
    if let Some(authorization) = authorization {
        request = request.header(http::header::AUTHORIZATION, authorization);
    }
    let response = request.send().await.expect("send");
    let status = response.status();
    let challenge = response.headers().get(http::header::WWW_AUTHENTICATE).is_some_and(|value| value == "Bearer");
    let text = response.text().await.expect("body");
    (status, text, challenge)
}

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("test timed out");
}

fn bearer() -> String {
    format!("Bearer {SECRET}")
}

fn sample_events() -> Vec<Event> {
    let date: EventDate = "2019-07-10T15:47:58.580873+00:00".parse().expect("date");
    let origin = Origin::new("bot-1", "Matelab Srl");
    vec![
        Event::BotMessage(
            Message::new(origin.clone(), "conv-9", "TelegramChannel", "Hey you, I'm your chatbot!", date)
                .item_type("Text")
                .user_name("conversation user name"),
        ),
        Event::UserMessage(Message::new(origin.clone(), "conv-9", "TelegramChannel", "Hello there!", date)),
        Event::IntentUpdated(CatalogChange::new(origin.clone(), "Intent Name", "Intent Key")),
        Event::NlpMissed(MissedText::new(origin.clone(), "Missed AI Text")),
        Event::NewUser(ConversationEvent::new(origin, "conv-9").date(date).channel("TelegramChannel")),
    ]
}

#[tokio::test]
async fn a_verified_push_is_answered_200_with_its_events() {
    bounded(async {
        let server = Server::start(64 * 1024).await;
        let events = sample_events();
        let (status, _, _) = post_body(&server, Some(&bearer()), eventhook::wire::encode_push(&events)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(server.pushes(), vec![events]);
    })
    .await;
}

#[tokio::test]
async fn a_lowercase_scheme_is_accepted() {
    bounded(async {
        let server = Server::start(64 * 1024).await;
        let events = sample_events();
        let authorization = format!("bearer {SECRET}");
        let (status, _, _) = post_body(&server, Some(&authorization), eventhook::wire::encode_push(&events)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(server.pushes().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn missing_and_wrong_bearers_get_the_same_401() {
    bounded(async {
        let server = Server::start(64 * 1024).await;
        let body = b"[]".to_vec();
        let wrong = post_body(&server, Some("Bearer not-the-secret"), body.clone()).await;
        let missing = post_body(&server, None, body.clone()).await;
        let basic = post_body(&server, Some("Basic Ym90OnNlY3JldA=="), body.clone()).await;
        let near = post_body(&server, Some(&format!("Bearer {SECRET}x")), body).await;
        for answer in [&wrong, &missing, &basic, &near] {
            assert_eq!(answer.0, StatusCode::UNAUTHORIZED);
            assert_eq!(answer.1, UNAUTHORIZED_MESSAGE);
            assert!(answer.2, "WWW-Authenticate: Bearer");
            assert!(!answer.1.contains(SECRET));
        }
        assert!(server.pushes().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_wrong_bearer_is_refused_before_the_body_is_looked_at() {
    bounded(async {
        let server = Server::start(1024).await;
        let (status, _, _) = post_body(&server, Some("Bearer wrong"), vec![b'x'; 4096]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    bounded(async {
        let server = Server::start(1024).await;
        // Built by hand so that this test does not depend on the encoder.
        let entries = vec![r#"{"Type": 8, "BotToken": "bot-1", "ConversationId": "conv-9"}"#; 40];
        let body = format!("[{}]", entries.join(",")).into_bytes();
        assert!(body.len() > 1024);
        let (status, text, _) = post_body(&server, Some(&bearer()), body).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(text.contains("1024"), "{text}");
        assert!(server.pushes().is_empty());
    })
    .await;
}

/// A chunked body (no `Content-Length`) is counted while it is read.
#[tokio::test]
async fn an_oversized_chunked_body_gets_413() {
    bounded(async {
        let server = Server::start(1024).await;
        let mut stream = tokio::net::TcpStream::connect(server.address).await.expect("connect");
        let mut request = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {SECRET}\r\n\
             Content-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            server.address
        )
        .into_bytes();
        for _ in 0..4 {
            request.extend_from_slice(format!("{:x}\r\n", 512).as_bytes());
            request.extend_from_slice(&[b' '; 512]);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        stream.write_all(&request).await.expect("write");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 413"), "{response}");
        assert!(server.pushes().is_empty());
    })
    .await;
}

#[tokio::test]
async fn bad_json_gets_400_naming_the_problem() {
    bounded(async {
        let server = Server::start(64 * 1024).await;

        let (status, text, _) = post_body(&server, Some(&bearer()), br#"[{"Type": 1, "Data": "#.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.starts_with("invalid push body: "), "{text}");

        let (status, text, _) = post_body(&server, Some(&bearer()), br#"[{"Type": "one"}]"#.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("entry 0") && text.contains("\"Type\""), "{text}");

        let mut body = eventhook::wire::encode_push(&sample_events()[..1]);
        body.pop(); // the closing `]`
        body.extend_from_slice(br#",{"Type": 1, "Data": 42}]"#);
        let (status, text, _) = post_body(&server, Some(&bearer()), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("entry 1") && text.contains("\"Data\""), "{text}");

        assert!(server.pushes().is_empty());
    })
    .await;
}

#[tokio::test]
async fn an_unknown_type_is_kept_and_the_push_accepted() {
    bounded(async {
        let server = Server::start(64 * 1024).await;
        let known = sample_events().remove(1);
        let mut body = eventhook::wire::encode_push(std::slice::from_ref(&known));
        body.pop(); // the closing `]`
        body.extend_from_slice(br#",{"Type": 14, "BotToken": "bot-1", "Shiny": {"New": true}}]"#);
        let (status, _, _) = post_body(&server, Some(&bearer()), body).await;
        assert_eq!(status, StatusCode::OK);
        let pushes = server.pushes();
        assert_eq!(pushes.len(), 1);
        let events = &pushes[0];
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], known);
        match &events[1] {
            Event::Unknown(unknown) => {
                assert_eq!(unknown.code, 14);
                assert_eq!(unknown.field("BotToken"), Some(&serde_json::json!("bot-1")));
                assert_eq!(unknown.field("Shiny"), Some(&serde_json::json!({"New": true})));
            }
            other => panic!("expected an unknown event, got {other:?}"),
        }
        assert_eq!(events[1].bot_token(), Some("bot-1"));
    })
    .await;
}

/// A body that is one event object, not an array, is a push of that one event.
#[tokio::test]
async fn a_bare_event_object_is_a_push_of_one() {
    bounded(async {
        let server = Server::start(64 * 1024).await;
        let event = sample_events().remove(3);
        let mut body = Vec::new();
        eventhook::wire::encode_event(&event, &mut body);
        assert_eq!(body.first(), Some(&b'{'));
        let (status, _, _) = post_body(&server, Some(&bearer()), body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(server.pushes(), vec![vec![event]]);
    })
    .await;
}
