//! `ReqwestTransport` against real HTTP servers on 127.0.0.1 (ephemeral ports).
#![cfg(all(feature = "reqwest", feature = "tokio"))]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use eventhook::adapters::ReqwestTransport;
use eventhook::{Transport, TransportError, TransportErrorKind};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const SECRET: &str = "s3cr3t-bot-token";
const TEST_LIMIT: Duration = Duration::from_secs(10);

/// Runs a test body, failing it if it takes longer than `TEST_LIMIT`.
async fn bounded<T>(test: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_LIMIT, test).await {
        Ok(value) => value,
        Err(_) => panic!("test took longer than {TEST_LIMIT:?}"),
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Debug, Default)]
struct ServerState {
    received: Mutex<Vec<Received>>,
    connections: AtomicUsize,
    /// Bytes of the streamed huge body handed to the connection so far.
    streamed_bytes: Arc<AtomicUsize>,
}

impl ServerState {
    fn received(&self) -> Vec<Received> {
        self.received.lock().map(|received| received.clone()).unwrap_or_default()
    }

    fn paths(&self) -> Vec<String> {
        self.received().into_iter().map(|received| received.path).collect()
    }
}

struct TestServer {
    address: SocketAddr,
    state: Arc<ServerState>,
}

impl TestServer {
    async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("local address");
        let state = Arc::new(ServerState::default());
        let accept_state = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let connection_state = Arc::clone(&accept_state);
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(Arc::clone(&connection_state), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer { address, state }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn localhost_url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.address.port())
    }
}

fn response(status: StatusCode, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

async fn handle(state: Arc<ServerState>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), usize::MAX).await.unwrap_or_default();
    let path = parts.uri.path().to_owned();
    if let Ok(mut received) = state.received.lock() {
        received.push(Received { method: parts.method, path: path.clone(), headers: parts.headers, body });
    }
    let reply = match path.as_str() {
        "/ok" | "/target" => response(StatusCode::OK, Body::from("ok")),
        "/small" => response(StatusCode::OK, Body::from(vec![b'x'; 1024])),
        "/small-stream" => {
            // 4 KiB in chunks, without a Content-Length.
            let chunks = futures::stream::iter((0..4).map(|_| Ok::<Bytes, Infallible>(Bytes::from(vec![b'y'; 1024]))));
            response(StatusCode::OK, Body::from_stream(chunks))
        }
        "/error" => response(StatusCode::INTERNAL_SERVER_ERROR, Body::empty()),
        "/empty" => response(StatusCode::NO_CONTENT, Body::empty()),
        "/moved" | "/found" => {
            let status = if path == "/moved" { StatusCode::MOVED_PERMANENTLY } else { StatusCode::FOUND };
            let mut reply = response(status, Body::empty());
            reply.headers_mut().insert(http::header::LOCATION, HeaderValue::from_static("/target"));
            reply
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            response(StatusCode::OK, Body::empty())
        }
        "/huge" => response(StatusCode::OK, Body::from(vec![b'x'; 10 * 1024 * 1024])),
        "/huge-stream" => {
            // 100 MiB, produced lazily and counted, without a Content-Length.
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let counter = Arc::clone(&state.streamed_bytes);
            let chunks = futures::stream::iter((0..1600).map(move |_| {
                counter.fetch_add(chunk.len(), Ordering::SeqCst);
                Ok::<Bytes, Infallible>(chunk.clone())
            }));
            response(StatusCode::OK, Body::from_stream(chunks))
        }
        _ => response(StatusCode::NOT_FOUND, Body::empty()),
    };
    Ok(reply)
}

fn push(url: &str) -> Request<Vec<u8>> {
    let mut authorization = HeaderValue::from_str(&format!("Bearer {SECRET}")).expect("header value");
    authorization.set_sensitive(true);
    Request::post(url)
        .header(http::header::AUTHORIZATION, authorization)
        .header(http::header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(http::header::USER_AGENT, eventhook::USER_AGENT)
        .header("x-custom", "one")
        .body(br#"[{"Type":0,"Data":"hello"}]"#.to_vec())
        .expect("request")
}

fn local_transport() -> ReqwestTransport {
    ReqwestTransport::builder().allow_private_networks(true).build().expect("transport")
}

fn assert_no_secret(error: &TransportError) {
    assert!(!error.message.contains(SECRET), "the message leaks the secret: {}", error.message);
    assert!(!error.to_string().contains(SECRET), "the error leaks the secret: {error}");
}

#[tokio::test]
async fn ok_delivers_exactly_the_request_sent() {
    bounded(async {
        let server = TestServer::start().await;
        let request = push(&server.url("/ok?bot=1"));
        let sent_headers = request.headers().clone();
        let sent_body = request.body().clone();

        let status = local_transport().send(request).await.expect("status");

        assert_eq!(status, StatusCode::OK);
        let received = server.state.received();
        assert_eq!(received.len(), 1);
        let received = &received[0];
        assert_eq!(received.method, Method::POST);
        assert_eq!(received.path, "/ok");
        assert_eq!(received.body.as_ref(), sent_body.as_slice());
        for (name, value) in &sent_headers {
            let arrived: Vec<&HeaderValue> = received.headers.get_all(name).iter().collect();
            assert_eq!(arrived, vec![value], "header {name}");
        }
        // Besides the headers sent, only what HTTP/1.1 framing needs, and reqwest's `accept: */*`.
        for name in received.headers.keys() {
            assert!(
                sent_headers.contains_key(name) || ["host", "content-length", "accept"].contains(&name.as_str()),
                "unexpected header {name}"
            );
        }
        assert_eq!(received.headers.get("content-length"), Some(&HeaderValue::from(sent_body.len())));
    })
    .await;
}

#[tokio::test]
async fn other_statuses_are_returned_as_they_are() {
    bounded(async {
        let server = TestServer::start().await;
        let transport = local_transport();
        for (path, expected) in [
            ("/error", StatusCode::INTERNAL_SERVER_ERROR),
            ("/missing", StatusCode::NOT_FOUND),
            ("/empty", StatusCode::NO_CONTENT),
        ] {
            let status = transport.send(push(&server.url(path))).await.expect("status");
            assert_eq!(status, expected, "{path}");
        }
    })
    .await;
}

#[tokio::test]
async fn redirects_are_returned_and_never_followed() {
    bounded(async {
        let server = TestServer::start().await;
        let transport = local_transport();
        let moved = transport.send(push(&server.url("/moved"))).await.expect("status");
        let found = transport.send(push(&server.url("/found"))).await.expect("status");
        assert_eq!(moved, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(found, StatusCode::FOUND);
        // Give a wrongly followed redirect time to arrive before checking it did not.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.state.paths(), vec!["/moved", "/found"]);
    })
    .await;
}

#[tokio::test]
async fn a_hanging_server_times_out() {
    bounded(async {
        let server = TestServer::start().await;
        let transport = ReqwestTransport::builder()
            .allow_private_networks(true)
            .request_timeout(Duration::from_millis(300))
            .build()
            .expect("transport");
        let started = Instant::now();
        let error = transport.send(push(&server.url("/slow"))).await.expect_err("a timeout");
        assert_eq!(error.kind, TransportErrorKind::Timeout, "{error}");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        assert_no_secret(&error);
    })
    .await;
}

#[tokio::test]
async fn a_dropped_connection_is_an_io_or_connect_error() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            // Accept, then close at once without answering.
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let error = local_transport().send(push(&format!("http://{address}/ok"))).await.expect_err("an error");
        assert!(matches!(error.kind, TransportErrorKind::Io | TransportErrorKind::Connect), "{error:?}");
        assert_no_secret(&error);
    })
    .await;
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        drop(listener);
        let error = local_transport().send(push(&format!("http://{address}/ok"))).await.expect_err("an error");
        assert_eq!(error.kind, TransportErrorKind::Connect, "{error}");
        assert!(error.message.contains(&address.to_string()), "{error}");
        assert_no_secret(&error);
    })
    .await;
}

#[tokio::test]
async fn a_huge_reply_body_is_not_read() {
    bounded(async {
        let server = TestServer::start().await;
        let transport = local_transport();

        let started = Instant::now();
        let status = transport.send(push(&server.url("/huge"))).await.expect("status");
        assert_eq!(status, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());

        let started = Instant::now();
        let status = transport.send(push(&server.url("/huge-stream"))).await.expect("status");
        assert_eq!(status, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        // Only what socket buffers absorbed was produced, far from the 100 MiB.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let streamed = server.state.streamed_bytes.load(Ordering::SeqCst);
        assert!(streamed < 50 * 1024 * 1024, "the server produced {streamed} bytes");
    })
    .await;
}

#[tokio::test]
async fn a_small_reply_body_leaves_the_connection_reusable() {
    bounded(async {
        let server = TestServer::start().await;
        let transport = local_transport();
        for _ in 0..3 {
            let status = transport.send(push(&server.url("/small"))).await.expect("status");
            assert_eq!(status, StatusCode::OK);
        }
        assert_eq!(server.state.connections.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn a_small_chunked_reply_body_leaves_the_connection_reusable() {
    bounded(async {
        let server = TestServer::start().await;
        let transport = local_transport();
        for _ in 0..3 {
            let status = transport.send(push(&server.url("/small-stream"))).await.expect("status");
            assert_eq!(status, StatusCode::OK);
            // `send` returns at the status; the chunks after it are read in the
            // background, which a local server's few bytes finish long before this.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(server.state.connections.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn a_reply_body_past_the_cap_is_abandoned_with_its_connection() {
    bounded(async {
        let server = TestServer::start().await;
        let transport = ReqwestTransport::builder()
            .allow_private_networks(true)
            .max_response_body_bytes(1000)
            .build()
            .expect("transport");
        for _ in 0..2 {
            let status = transport.send(push(&server.url("/small-stream"))).await.expect("status");
            assert_eq!(status, StatusCode::OK);
        }
        // Reading stopped past 1000 bytes, so each push needed a new connection.
        assert_eq!(server.state.connections.load(Ordering::SeqCst), 2);
    })
    .await;
}

#[tokio::test]
async fn the_guard_refuses_loopback_by_default() {
    bounded(async {
        let server = TestServer::start().await;
        let transport = ReqwestTransport::new().expect("transport");
        for (url, host) in
            [(server.url("/ok"), "127.0.0.1".to_owned()), (server.localhost_url("/ok"), "localhost".to_owned())]
        {
            let error = transport.send(push(&url)).await.expect_err("refused");
            assert_eq!(error.kind, TransportErrorKind::BlockedAddress, "{url}: {error}");
            assert!(error.message.contains(&host), "{error}");
            assert!(error.message.contains("loopback"), "{error}");
            assert_no_secret(&error);
        }
        let port = server.address.port();
        for url in [format!("http://[::1]:{port}/ok"), format!("http://[::ffff:127.0.0.1]:{port}/ok")] {
            let error = transport.send(push(&url)).await.expect_err("refused");
            assert_eq!(error.kind, TransportErrorKind::BlockedAddress, "{url}: {error}");
        }
        assert!(server.state.received().is_empty());
        assert_eq!(server.state.connections.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test]
async fn allow_private_networks_allows_loopback() {
    bounded(async {
        let server = TestServer::start().await;
        let transport = local_transport();
        for url in [server.url("/ok"), server.localhost_url("/ok")] {
            let status = transport.send(push(&url)).await.expect("status");
            assert_eq!(status, StatusCode::OK, "{url}");
        }
        assert_eq!(server.state.paths(), vec!["/ok", "/ok"]);
    })
    .await;
}
