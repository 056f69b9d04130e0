//! A misbehaving webhook receiver on 127.0.0.1, for the fault-injection
//! tests and the soak.
//!
//! Raw TCP, so that it can answer as no HTTP server library would: garbage,
//! a reset, headers that never end, a body that never comes. Bounded: it
//! serves at most [`MAX_CONNECTIONS`] connections, a stall lasts at most
//! [`STALL_LIMIT`] (or until the client hangs up), and it stops when dropped.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const SECRET: &str = "fault-injection-secret";
pub const MAX_CONNECTIONS: usize = 10_000;
pub const STALL_LIMIT: Duration = Duration::from_secs(5);
/// The "50 MB body" a receiver may answer with.
pub const HUGE_BODY_BYTES: u64 = 50 * 1024 * 1024;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// This status, an empty body (a `3xx` points elsewhere on 127.0.0.1).
    Status(u16),
    /// `200`, after this long.
    Slow(Duration),
    /// The connection is reset (RST) before any reply.
    Reset,
    /// Part of the status line and headers, then nothing.
    HeadersThenStall,
    /// `200` headers announcing 1,000 bytes, 3 of them, then nothing.
    OkThenStalledBody,
    /// `200` with a chunked body of 50 MB.
    HugeBody,
    /// Bytes that are not HTTP, then the connection is closed.
    Garbage,
}

impl Behaviour {
    /// Whether the reply carries a `200` status line.
    pub fn answers_200(self) -> bool {
        matches!(self, Behaviour::Status(200) | Behaviour::Slow(_) | Behaviour::OkThenStalledBody | Behaviour::HugeBody)
    }
}

/// What the receiver saw.
#[derive(Debug, Default)]
pub struct State {
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
    /// The `Data` of every event in a request answered with a `200` status line.
    pub acknowledged: Mutex<Vec<String>>,
    /// Requests whose body the crate's own receiver refused (bad bearer, unparsable push).
    pub refused: Mutex<Vec<String>>,
    /// Body bytes written for [`Behaviour::HugeBody`].
    pub huge_bytes_written: AtomicU64,
}

/// A running receiver; stops when dropped.
pub struct FaultyReceiver {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    task: JoinHandle<()>,
}

type Choose = Arc<dyn Fn(usize) -> Behaviour + Send + Sync>;

impl FaultyReceiver {
    /// Answers every request with `behaviour`.
    pub async fn start(behaviour: Behaviour) -> FaultyReceiver {
        FaultyReceiver::with(move |_| behaviour).await
    }

    /// Answers request number `n` (from 0, over all connections) with `choose(n)`.
    pub async fn with(choose: impl Fn(usize) -> Behaviour + Send + Sync + 'static) -> FaultyReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State::default());
        let choose: Choose = Arc::new(choose);
        let accept_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while accept_state.connections.load(Ordering::SeqCst) < MAX_CONNECTIONS {
                let Ok((stream, _)) = listener.accept().await else { return };
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, Arc::clone(&accept_state), Arc::clone(&choose)));
            }
        });
        FaultyReceiver { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn acknowledged(&self) -> Vec<String> {
        self.state.acknowledged.lock().unwrap().clone()
    }
}

impl Drop for FaultyReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A URL on 127.0.0.1 where nothing listens: connecting is refused.
pub fn refused_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).unwrap().port();
    format!("http://127.0.0.1:{port}/hook")
}

/// Serves the requests of one connection until it closes or a behaviour ends it.
async fn serve(mut stream: TcpStream, state: Arc<State>, choose: Choose) {
    let mut buffer = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut stream, &mut buffer).await else { return };
        let behaviour = choose(state.requests.fetch_add(1, Ordering::SeqCst));
        if behaviour.answers_200() {
            record(&state, &head, &body);
        }
        let keep_open = match behaviour {
            Behaviour::Status(code) => {
                let location =
                    if (300..400).contains(&code) { "location: http://127.0.0.1:9/elsewhere\r\n" } else { "" };
                let reply = format!("HTTP/1.1 {code} Fault\r\ncontent-length: 0\r\n{location}\r\n");
                stream.write_all(reply.as_bytes()).await.is_ok()
            }
            Behaviour::Slow(delay) => {
                tokio::time::sleep(delay).await;
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_ok()
            }
            Behaviour::Reset => {
                // Deprecated because a lingering close blocks; a zero linger resets at once.
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
                false
            }
            Behaviour::HeadersThenStall => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-le").await;
                stall(&mut stream).await;
                false
            }
            Behaviour::OkThenStalledBody => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nabc").await;
                stall(&mut stream).await;
                false
            }
            Behaviour::HugeBody => {
                huge_body(&mut stream, &state).await;
                false
            }
            Behaviour::Garbage => {
                let _ = stream.write_all(b"\x00\x01 this is not HTTP \xff\r\n\r\n").await;
                false
            }
        };
        if !keep_open {
            return;
        }
    }
}

/// Reads one request's head and `content-length` body; `None` at the end of the connection.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let read = async {
        let mut chunk = [0u8; 16 * 1024];
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break at + 4;
            }
            let count = stream.read(&mut chunk).await.ok().filter(|count| *count > 0)?;
            buffer.extend_from_slice(&chunk[..count]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let count = stream.read(&mut chunk).await.ok().filter(|count| *count > 0)?;
            buffer.extend_from_slice(&chunk[..count]);
        }
        let body = buffer[head_end..head_end + length].to_vec();
        buffer.drain(..head_end + length);
        Some((head, body))
    };
    tokio::time::timeout(STALL_LIMIT, read).await.ok().flatten()
}

/// Checks the request as a receiver built with this crate does, and keeps its events' `Data`.
fn record(state: &State, head: &str, body: &[u8]) {
    let mut headers = http::HeaderMap::new();
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(name.trim().as_bytes()), http::HeaderValue::from_str(value.trim()))
        {
            headers.append(name, value);
        }
    }
    let receiver = eventhook::receiver::WebhookReceiver::new(eventhook::BotSecret::new(SECRET).unwrap());
    match receiver.receive(&headers, body) {
        Ok(events) => state.acknowledged.lock().unwrap().extend(events.into_iter().map(|event| match event {
            eventhook::Event::UserMessage(message) | eventhook::Event::BotMessage(message) => message.data,
            other => format!("{other:?}"),
        })),
        Err(error) => state.refused.lock().unwrap().push(error.to_string()),
    }
}

/// Waits, sending nothing, until the client hangs up or [`STALL_LIMIT`] passes.
async fn stall(stream: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(STALL_LIMIT, async {
        while matches!(stream.read(&mut sink).await, Ok(count) if count > 0) {}
    })
    .await;
}

/// A `200` with a chunked 50 MB body, written until the client stops reading.
async fn huge_body(stream: &mut TcpStream, state: &State) {
    let _ = tokio::time::timeout(STALL_LIMIT, async {
        if stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let frame = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk, b"\r\n".to_vec()].concat();
        while state.huge_bytes_written.load(Ordering::SeqCst) < HUGE_BODY_BYTES {
            if stream.write_all(&frame).await.is_err() {
                return;
            }
            state.huge_bytes_written.fetch_add(64 * 1024, Ordering::SeqCst);
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
    })
    .await;
}
