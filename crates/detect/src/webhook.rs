//! The webhook responder: POSTs each alert (its EVE record, as JSON) to an `http://` URL from a
//! background thread, with retries and exponential backoff. Detection never waits for it: alerts go
//! into a bounded queue, and when the queue is full they are dropped and counted. At the end the
//! queue is drained for at most `drain` time; what is left then is dropped and counted.
//!
//! Plain HTTP/1.1 over `std::net::TcpStream` (no TLS: point it at a local relay for `https`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{DetectError, Result};
use crate::sink::{Batch, Counter, Sink, SinkReport, Stage};

/// Webhook settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `http://host[:port][/path]`.
    pub url: String,
    /// Alerts queued at most (default 1024); beyond, new alerts are dropped and counted.
    pub queue: usize,
    /// Attempts per alert (default 5).
    pub max_attempts: u32,
    /// Wait after the first failure (default 200 ms), doubled after each further one.
    pub initial_backoff: Duration,
    /// Longest wait between attempts (default 5 s).
    pub max_backoff: Duration,
    /// Connect, read and write timeout of one attempt (default 5 s).
    pub timeout: Duration,
    /// How long the end of the run waits for the queue to drain (default 10 s).
    pub drain: Duration,
}

impl WebhookConfig {
    /// Defaults for `url`.
    pub fn new(url: &str) -> Self {
        WebhookConfig {
            url: url.to_string(),
            queue: 1024,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            drain: Duration::from_secs(10),
        }
    }
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host (name or address; IPv6 in brackets).
    pub host: String,
    /// Port (default 80).
    pub port: u16,
    /// Path with query (default `/`).
    pub path: String,
}

impl HttpUrl {
    /// Parses `http://host[:port][/path]`; refuses other schemes and control characters.
    pub fn parse(url: &str) -> Result<Self> {
        let err = |message: String| DetectError::Config {
            field: "webhook",
            message,
        };
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            err(format!(
                "expected an http:// URL, found {url:?} (https is not supported: use a local relay)"
            ))
        })?;
        if url.chars().any(|c| c.is_control() || c == ' ') {
            return Err(err(format!(
                "{url:?} contains spaces or control characters"
            )));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            let (h, tail) = h
                .split_once(']')
                .ok_or_else(|| err(format!("unclosed [ in {url:?}")))?;
            (format!("[{h}]"), tail.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(err(format!("no host in {url:?}")));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| err(format!("bad port {p:?} in {url:?}")))?,
            None => 80,
        };
        Ok(HttpUrl {
            host,
            port,
            path: path.to_string(),
        })
    }
}

/// One POST; `Ok(status)` for any HTTP answer.
fn post(url: &HttpUrl, body: &str, timeout: Duration) -> std::result::Result<u16, String> {
    let addrs: Vec<SocketAddr> = (url.host.trim_matches(['[', ']']), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", url.host))?
        .collect();
    let mut last = String::from("no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connecting to {a}: {e}"),
        }
    }
    let mut s = stream.ok_or(last)?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: metaids/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host,
        url.port,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body.as_bytes()))
        .and_then(|_| s.flush())
        .map_err(|e| format!("sending: {e}"))?;
    let mut buf = [0u8; 512];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if buf[..got].contains(&b'\n') {
                    break;
                }
            }
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    let status = line
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("no HTTP status line in the answer ({got} bytes)"))?;
    Ok(status)
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The webhook responder.
#[derive(Debug)]
pub struct WebhookSink {
    config: WebhookConfig,
    tx: Option<SyncSender<String>>,
    worker: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    /// Drain deadline, set by [`Sink::finish`].
    deadline: Arc<Mutex<Option<Instant>>>,
}

fn worker(
    url: HttpUrl,
    config: WebhookConfig,
    rx: Receiver<String>,
    counters: Arc<Counters>,
    deadline: Arc<Mutex<Option<Instant>>>,
) {
    let past_deadline = || {
        deadline
            .lock()
            .ok()
            .and_then(|d| *d)
            .is_some_and(|d| Instant::now() >= d)
    };
    while let Ok(body) = rx.recv() {
        if past_deadline() {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut backoff = config.initial_backoff;
        let mut delivered = false;
        for attempt in 0..config.max_attempts.max(1) {
            if attempt > 0 {
                counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            match post(&url, &body, config.timeout) {
                Ok(code) if (200..300).contains(&code) => {
                    delivered = true;
                    break;
                }
                Ok(code) => set_error(&counters, format!("HTTP status {code}")),
                Err(e) => set_error(&counters, e),
            }
            if attempt + 1 == config.max_attempts.max(1) || past_deadline() {
                break;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(config.max_backoff);
        }
        let counter = if delivered {
            &counters.sent
        } else {
            &counters.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn set_error(counters: &Counters, e: String) {
    if let Ok(mut last) = counters.last_error.lock() {
        *last = Some(e);
    }
}

impl WebhookSink {
    /// Starts the background sender.
    pub fn start(config: WebhookConfig) -> Result<Self> {
        let url = HttpUrl::parse(&config.url)?;
        if config.queue == 0 {
            return Err(DetectError::Config {
                field: "webhook queue",
                message: "expected at least 1".into(),
            });
        }
        let (tx, rx) = sync_channel(config.queue);
        let counters = Arc::new(Counters::default());
        let deadline = Arc::new(Mutex::new(None));
        let (c, d, cfg) = (Arc::clone(&counters), Arc::clone(&deadline), config.clone());
        let worker = std::thread::Builder::new()
            .name("metaids-webhook".into())
            .spawn(move || worker(url, cfg, rx, c, d))
            .map_err(|e| DetectError::Sink {
                sink: "webhook".into(),
                message: format!("cannot start the sender thread: {e}"),
            })?;
        Ok(WebhookSink {
            config,
            tx: Some(tx),
            worker: Some(worker),
            counters,
            deadline,
        })
    }

    /// Queues one JSON body without blocking; `false` when it was dropped (queue full).
    pub fn enqueue(&self, body: String) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        match tx.try_send(body) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }

    fn stage(&self) -> Stage {
        Stage::Respond
    }

    fn write_batch(&mut self, batch: &Batch<'_>) -> Result<()> {
        for a in batch.alerts {
            self.enqueue(a.line.clone());
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport> {
        if let Ok(mut d) = self.deadline.lock() {
            *d = Some(Instant::now() + self.config.drain);
        }
        self.tx = None;
        if let Some(w) = self.worker.take() {
            w.join().map_err(|_| DetectError::Sink {
                sink: "webhook".into(),
                message: "the sender thread panicked".into(),
            })?;
        }
        let c = &self.counters;
        let mut notes = Vec::new();
        if let Some(e) = c.last_error.lock().ok().and_then(|e| e.clone()) {
            notes.push(format!("last webhook failure: {e}"));
        }
        Ok(SinkReport {
            sink: "webhook".into(),
            counters: vec![
                (Counter::WebhookSent, c.sent.load(Ordering::Relaxed)),
                (Counter::WebhookFailed, c.failed.load(Ordering::Relaxed)),
                (Counter::WebhookDropped, c.dropped.load(Ordering::Relaxed)),
                (Counter::WebhookRetries, c.retries.load(Ordering::Relaxed)),
            ],
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/hook?x=1").expect("url");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/hook?x=1")
        );
        let u = HttpUrl::parse("http://siem").expect("url");
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = HttpUrl::parse("http://[::1]:9/").expect("url");
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 9));
        for bad in [
            "https://x/",
            "ftp://x",
            "http://",
            "http://x:99999/",
            "http://x/a b",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    /// A server answering 500 to the first `fail` requests, then 200; returns the bodies it got.
    fn server(fail: usize, total: usize) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/alerts", l.local_addr().expect("addr"));
        let h = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for i in 0..total {
                let (s, _) = l.accept().expect("accept");
                let mut r = std::io::BufReader::new(s);
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    r.read_line(&mut line).expect("line");
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().expect("len");
                    }
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).expect("body");
                let code = if i < fail { "500 Oops" } else { "200 OK" };
                let mut s = r.into_inner();
                write!(s, "HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").expect("answer");
                bodies.push(String::from_utf8(body).expect("utf8"));
            }
            bodies
        });
        (url, h)
    }

    #[test]
    fn retries_with_backoff_until_accepted() {
        let (url, server) = server(2, 3);
        let cfg = WebhookConfig {
            initial_backoff: Duration::from_millis(20),
            ..WebhookConfig::new(&url)
        };
        let mut sink = WebhookSink::start(cfg).expect("start");
        let started = Instant::now();
        assert!(sink.enqueue("{\"a\":1}".into()));
        let report = sink.finish().expect("finish");
        // Two failures, then success: 20 ms + 40 ms of backoff at least.
        assert!(started.elapsed() >= Duration::from_millis(60));
        let get = |k: Counter| report.get(k);
        assert_eq!(get(Counter::WebhookSent), 1);
        assert_eq!(get(Counter::WebhookFailed), 0);
        assert_eq!(get(Counter::WebhookRetries), 2);
        assert_eq!(get(Counter::WebhookDropped), 0);
        assert_eq!(server.join().expect("server"), vec!["{\"a\":1}"; 3]);
    }

    #[test]
    fn gives_up_after_max_attempts_and_drops_when_full() {
        // Nothing listens on this port once the listener is dropped.
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let cfg = WebhookConfig {
            queue: 1,
            max_attempts: 2,
            initial_backoff: Duration::from_millis(50),
            drain: Duration::from_secs(5),
            ..WebhookConfig::new(&format!("http://127.0.0.1:{port}/"))
        };
        let mut sink = WebhookSink::start(cfg).expect("start");
        let queued = (0..50).filter(|i| sink.enqueue(format!("{i}"))).count();
        assert!(queued < 50, "a 1-slot queue cannot take 50 alerts at once");
        let report = sink.finish().expect("finish");
        let get = |k: Counter| report.get(k);
        assert_eq!(get(Counter::WebhookSent), 0);
        assert_eq!(
            get(Counter::WebhookFailed) + get(Counter::WebhookDropped),
            50
        );
        assert!(get(Counter::WebhookDropped) >= 50 - queued as u64);
        assert!(
            report.notes.iter().any(|n| n.contains("connecting")),
            "{report:?}"
        );
    }
}
