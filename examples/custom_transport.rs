//! Plugging eventhook into a host that uses neither reqwest nor tokio.
//!
//! The host implements two small traits:
//! - [`Transport`]: here a blocking HTTP/1.1 client over `std::net::TcpStream`,
//!   run on a thread per call so it never blocks the dispatcher's task;
//! - [`Runtime`]: here plain threads (spawn) and timer threads (sleep).
//!
//! A tiny blocking webhook receiver on 127.0.0.1 answers the calls, so the
//! example runs with nothing to set up:
//!
//! ```sh
//! cargo run --example custom_transport
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventhook::adapters::AddressGuard;
use eventhook::dispatch::{Dispatcher, WebhookDispatcher};
use eventhook::{
    ChatContext, Event, EventFactory, Runtime, Transport, TransportError, TransportErrorKind, WebhookConfig,
};
use futures::channel::oneshot;
use futures::future::BoxFuture;

/// Runs the dispatcher's task on its own thread; each sleep is a timer thread.
#[derive(Debug)]
struct ThreadRuntime;

impl Runtime for ThreadRuntime {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        std::thread::spawn(move || futures::executor::block_on(task));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let (wake, woken) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            let _ = wake.send(());
        });
        Box::pin(async move {
            let _ = woken.await;
        })
    }
}

/// A blocking HTTP/1.1 client for `http://` URLs, one connection per call.
#[derive(Debug, Clone, Copy)]
struct BlockingHttpTransport {
    guard: AddressGuard,
    timeout: Duration,
}

impl BlockingHttpTransport {
    fn post(&self, request: &http::Request<Vec<u8>>) -> Result<http::StatusCode, TransportError> {
        let failure = |kind, message: String| TransportError::new(kind, message);
        let uri = request.uri();
        if uri.scheme_str() != Some("http") {
            return Err(failure(TransportErrorKind::Other, format!("{uri}: this example speaks plain http only")));
        }
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or(80);
        // Resolve, then keep only addresses the guard allows: checked on the IPs actually dialled.
        let addresses: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|error| failure(TransportErrorKind::Connect, format!("cannot resolve {host}: {error}")))?
            .collect();
        let allowed = addresses.iter().find(|address| self.guard.check(address.ip()).is_ok()).ok_or_else(|| {
            let reason = addresses
                .first()
                .and_then(|address| self.guard.check(address.ip()).err())
                .map_or_else(|| format!("{host} has no address"), |blocked| blocked.to_string());
            failure(TransportErrorKind::BlockedAddress, reason)
        })?;
        let io = |error: std::io::Error| {
            let kind = if error.kind() == std::io::ErrorKind::TimedOut || error.kind() == std::io::ErrorKind::WouldBlock
            {
                TransportErrorKind::Timeout
            } else {
                TransportErrorKind::Io
            };
            failure(kind, format!("{host}:{port}: {error}"))
        };
        let mut stream = TcpStream::connect_timeout(allowed, self.timeout)
            .map_err(|error| failure(TransportErrorKind::Connect, format!("{allowed}: {error}")))?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let path = uri.path_and_query().map_or("/", |path| path.as_str());
        let mut head = format!("POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n");
        for (name, value) in request.headers() {
            // Header values were checked by the dispatcher (the secret cannot hold CR or LF).
            head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or_default()));
        }
        head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", request.body().len()));
        stream.write_all(head.as_bytes()).map_err(io)?;
        stream.write_all(request.body()).map_err(io)?;
        let mut status_line = String::new();
        BufReader::new(stream).read_line(&mut status_line).map_err(io)?;
        // "HTTP/1.1 200 OK": the status is the second word.
        status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .and_then(|code| http::StatusCode::from_u16(code).ok())
            .ok_or_else(|| failure(TransportErrorKind::Io, format!("not an HTTP reply: {status_line:?}")))
    }
}

#[async_trait]
impl Transport for BlockingHttpTransport {
    async fn send(&self, request: http::Request<Vec<u8>>) -> Result<http::StatusCode, TransportError> {
        // Blocking I/O belongs on its own thread, never on the dispatcher's task.
        let (reply, replied) = oneshot::channel();
        let transport = *self;
        std::thread::spawn(move || {
            let _ = reply.send(transport.post(&request));
        });
        replied.await.unwrap_or_else(|_| Err(TransportError::new(TransportErrorKind::Other, "client thread ended")))
    }
}

/// A minimal webhook receiver: reads each request, checks it looks right, answers 200.
fn start_receiver(secret: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut content_length = 0;
            let mut authorized = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(length) = lower.strip_prefix("content-length:") {
                    content_length = length.trim().parse().unwrap_or(0);
                }
                authorized |= line.trim_end() == format!("authorization: Bearer {secret}");
            }
            let mut body = vec![0; content_length];
            let parsed = reader.read_exact(&mut body).ok().and_then(|()| eventhook::wire::parse_push(&body).ok());
            let status = match (authorized, parsed) {
                (true, Some(events)) => {
                    println!(
                        "  receiver: {} events, kinds {:?}",
                        events.len(),
                        events.iter().map(Event::code).collect::<Vec<_>>()
                    );
                    "200 OK"
                }
                (false, _) => "401 Unauthorized",
                (true, None) => "400 Bad Request",
            };
            let _ = reader.get_mut().write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
        }
    });
    Ok(address)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const SECRET: &str = "custom-transport-secret";
    let address = start_receiver(SECRET)?;
    println!("receiver on http://{address}/ (a loopback address: the guard is told to allow private networks)");

    let transport =
        BlockingHttpTransport { guard: AddressGuard::allow_private_networks(), timeout: Duration::from_secs(5) };
    let dispatcher =
        WebhookDispatcher::builder().transport(Arc::new(transport)).runtime(Arc::new(ThreadRuntime)).build()?;
    dispatcher.configure(
        WebhookConfig::builder("bot-token", "Matelab Srl", format!("http://{address}/events"), SECRET)
            .push_interval(Duration::from_millis(200))
            .build()?,
    )?;

    let bot = EventFactory::new("bot-token", "Matelab Srl");
    let chat = ChatContext::new("conversation-1", "WebChatChannel");
    for event in [
        Event::NewUser(bot.conversation(&chat)),
        Event::UserMessage(bot.message(&chat, "Hello there!")),
        Event::BotMessage(bot.message(&chat, "Hey you, I'm your chatbot!").item_type("Text")),
        Event::TakeOver(bot.conversation(&chat)),
    ] {
        let _ = dispatcher.enqueue(event);
    }
    // No async runtime here: block on the dispatcher's futures with the futures executor.
    let report = futures::executor::block_on(dispatcher.shutdown(Duration::from_secs(5)));
    let totals = report.stats.totals;
    println!(
        "delivered {} of {} events in {} calls; {} handed back",
        totals.delivered,
        totals.accepted,
        totals.calls,
        report.undelivered.len()
    );
    if totals.delivered != totals.accepted {
        return Err("not every event was delivered".into());
    }
    Ok(())
}
