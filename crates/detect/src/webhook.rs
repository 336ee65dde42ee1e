//! The webhook responder: POSTs each alert (its EVE record, as JSON) to an `http://` or `https://`
//! URL from a background thread, with retries and exponential backoff. Detection never waits for
//! it: alerts go into a bounded queue, and when the queue is full they are dropped and counted. At
//! the end the queue is drained for at most `drain` time; what is left then is dropped and counted.
//!
//! The client is `ureq` (rustls, no system OpenSSL): one agent whose connections are kept alive
//! between alerts, HTTPS verified against Mozilla's roots or the PEM certificates of
//! [`WebhookConfig::ca_file`] (an internal CA), and an optional header such as
//! `Authorization: Bearer …` sent with every request.

use std::path::PathBuf;
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
    /// `http://` or `https://host[:port][/path]`.
    pub url: String,
    /// A header sent with every request, `Name: value` (e.g. `Authorization: Bearer TOKEN`).
    pub header: Option<String>,
    /// PEM certificates to trust for `https` instead of Mozilla's roots (an internal CA).
    pub ca_file: Option<PathBuf>,
    /// Alerts queued at most (default 1024); beyond, new alerts are dropped and counted.
    pub queue: usize,
    /// Attempts per alert (default 5).
    pub max_attempts: u32,
    /// Wait after the first failure (default 200 ms), doubled after each further one.
    pub initial_backoff: Duration,
    /// Longest wait between attempts (default 5 s).
    pub max_backoff: Duration,
    /// Time limit of one attempt, connection included (default 5 s).
    pub timeout: Duration,
    /// How long the end of the run waits for the queue to drain (default 10 s).
    pub drain: Duration,
}

impl WebhookConfig {
    /// Defaults for `url`.
    pub fn new(url: &str) -> Self {
        WebhookConfig {
            url: url.to_string(),
            header: None,
            ca_file: None,
            queue: 1024,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            drain: Duration::from_secs(10),
        }
    }
}

fn config_error(message: String) -> DetectError {
    DetectError::Config {
        field: "webhook",
        message,
    }
}

/// Checks the URL: `http://` or `https://`, a host, no spaces or control characters.
fn check_url(url: &str) -> Result<ureq::http::Uri> {
    if url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(config_error(format!(
            "{url:?} contains spaces or control characters"
        )));
    }
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| config_error(format!("{url:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(config_error(format!(
                "expected an http:// or https:// URL, found {url:?}"
            )))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(config_error(format!("no host in {url:?}")));
    }
    // The port after the host (after `]` for an IPv6 address), if any, must be a u16.
    let authority = uri.authority().map_or("", |a| a.as_str());
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = authority.rsplit_once(']').map_or(authority, |(_, t)| t);
    if let Some((_, port)) = after_host.rsplit_once(':') {
        if port.parse::<u16>().is_err() {
            return Err(config_error(format!("bad port {port:?} in {url:?}")));
        }
    }
    Ok(uri)
}

/// The header `Name: value`, checked.
fn check_header(h: &str) -> Result<(String, String)> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| config_error(format!("header {h:?}: expected `Name: value`")))?;
    let name = name.trim();
    let value = value.trim();
    ureq::http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|e| config_error(format!("header name {name:?}: {e}")))?;
    ureq::http::HeaderValue::from_str(value)
        .map_err(|e| config_error(format!("header value of {name}: {e}")))?;
    Ok((name.to_string(), value.to_string()))
}

/// The HTTP client: one agent, connections kept alive, TLS roots as configured.
fn agent(config: &WebhookConfig) -> Result<ureq::Agent> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(DetectError::io(path))?;
        let certs = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| config_error(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(config_error(format!(
                "{}: no PEM certificate in it",
                path.display()
            )));
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(config.timeout))
        .user_agent(format!("metaids/{}", env!("CARGO_PKG_VERSION")))
        .tls_config(tls.build())
        .build();
    Ok(config.into())
}

/// One POST; `Ok(status)` for any HTTP answer (its body read, so the connection is reused).
fn post(
    agent: &ureq::Agent,
    url: &str,
    header: Option<&(String, String)>,
    body: &str,
) -> std::result::Result<u16, String> {
    let mut req = agent.post(url).header("Content-Type", "application/json");
    if let Some((name, value)) = header {
        req = req.header(name.as_str(), value.as_str());
    }
    let mut resp = req.send(body).map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    // Reading the (small) answer lets the agent keep the connection for the next alert.
    let _ = resp.body_mut().with_config().limit(64 * 1024).read_to_vec();
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
    agent: ureq::Agent,
    header: Option<(String, String)>,
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
            match post(&agent, &config.url, header.as_ref(), &body) {
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
        check_url(&config.url)?;
        let header = config.header.as_deref().map(check_header).transpose()?;
        let agent = agent(&config)?;
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
            .spawn(move || worker(agent, header, cfg, rx, c, d))
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
    use std::io::{BufRead, Read, Write};
    use std::net::TcpListener;

    #[test]
    fn urls_and_headers_are_checked() {
        for good in [
            "http://127.0.0.1:8080/hook?x=1",
            "http://siem",
            "https://[::1]:9/",
            "https://siem.example/alerts",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in ["ftp://x", "http://", "http://x:99999/", "http://x/a b", "x"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            check_header("Authorization: Bearer abc").expect("header"),
            ("Authorization".to_string(), "Bearer abc".to_string())
        );
        for bad in ["no colon", "Bad Name: x", "X: a\nb"] {
            assert!(check_header(bad).is_err(), "{bad:?}");
        }
        let missing = WebhookConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..WebhookConfig::new("https://x/")
        };
        assert!(WebhookSink::start(missing).is_err());
    }

    /// One request read from `r`: its headers (lower-case names) and body; `None` at EOF.
    fn read_request(r: &mut impl BufRead) -> Option<(Vec<(String, String)>, String)> {
        let mut headers = Vec::new();
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        loop {
            line.clear();
            r.read_line(&mut line).ok()?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':')?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).ok()?;
        Some((headers, String::from_utf8(body).ok()?))
    }

    /// What a test server saw.
    #[derive(Debug, Default)]
    struct Seen {
        connections: usize,
        bodies: Vec<String>,
        auth: Vec<Option<String>>,
    }

    /// Serves requests on kept-alive connections, answering 500 to the first `fail` and 200 after,
    /// until `total` requests; `wrap` turns an accepted stream into the one to speak HTTP on.
    fn serve<S: Read + Write>(
        l: TcpListener,
        fail: usize,
        total: usize,
        wrap: impl Fn(std::net::TcpStream) -> S,
    ) -> Seen {
        let mut seen = Seen::default();
        while seen.bodies.len() < total {
            let (s, _) = l.accept().expect("accept");
            seen.connections += 1;
            let mut r = std::io::BufReader::new(wrap(s));
            while let Some((headers, body)) = read_request(&mut r) {
                let code = if seen.bodies.len() < fail {
                    "500 Oops"
                } else {
                    "200 OK"
                };
                seen.auth.push(
                    headers
                        .iter()
                        .find(|(k, _)| k == "authorization")
                        .map(|(_, v)| v.clone()),
                );
                seen.bodies.push(body);
                let s = r.get_mut();
                write!(s, "HTTP/1.1 {code}\r\nContent-Length: 2\r\n\r\nok").expect("answer");
                s.flush().expect("flush");
                if seen.bodies.len() == total {
                    break;
                }
            }
        }
        seen
    }

    #[test]
    fn retries_with_backoff_until_accepted_on_one_kept_alive_connection() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/alerts", l.local_addr().expect("addr"));
        let server = std::thread::spawn(move || serve(l, 2, 5, |s| s));
        let cfg = WebhookConfig {
            initial_backoff: Duration::from_millis(20),
            header: Some("Authorization: Bearer siem-token".into()),
            ..WebhookConfig::new(&url)
        };
        let mut sink = WebhookSink::start(cfg).expect("start");
        let started = Instant::now();
        for i in 0..3 {
            assert!(sink.enqueue(format!("{{\"a\":{i}}}")));
        }
        let report = sink.finish().expect("finish");
        // Two failures, then success: 20 ms + 40 ms of backoff at least.
        assert!(started.elapsed() >= Duration::from_millis(60));
        let get = |k: Counter| report.get(k);
        assert_eq!(get(Counter::WebhookSent), 3);
        assert_eq!(get(Counter::WebhookFailed), 0);
        assert_eq!(get(Counter::WebhookRetries), 2);
        assert_eq!(get(Counter::WebhookDropped), 0);
        let seen = server.join().expect("server");
        assert_eq!(
            seen.bodies,
            [
                "{\"a\":0}",
                "{\"a\":0}",
                "{\"a\":0}",
                "{\"a\":1}",
                "{\"a\":2}"
            ]
        );
        assert!(seen
            .auth
            .iter()
            .all(|a| a.as_deref() == Some("Bearer siem-token")));
        assert_eq!(
            seen.connections, 1,
            "one connection kept alive for every post"
        );
    }

    /// HTTPS to a local rustls server whose certificate is signed by a private CA (both made by the
    /// `openssl` command) trusted through `ca_file`; without it the certificate is refused.
    #[test]
    fn posts_over_https_with_a_private_ca() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = |n: &str| dir.path().join(n);
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("ext");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let steps: [Vec<std::ffi::OsString>; 3] = [
            ["req", "-x509"]
                .iter()
                .chain(&ec)
                .chain(&["-days", "2", "-subj", "/CN=metaids test CA", "-keyout"])
                .map(Into::into)
                .chain([p("ca.key").into(), "-out".into(), p("ca.pem").into()])
                .collect(),
            ["req"]
                .iter()
                .chain(&ec)
                .chain(&["-subj", "/CN=localhost", "-keyout"])
                .map(Into::into)
                .chain([p("key.pem").into(), "-out".into(), p("leaf.csr").into()])
                .collect(),
            ["x509", "-req", "-days", "2", "-in"]
                .iter()
                .map(Into::into)
                .chain([
                    p("leaf.csr").into(),
                    "-CA".into(),
                    p("ca.pem").into(),
                    "-CAkey".into(),
                    p("ca.key").into(),
                    "-CAcreateserial".into(),
                    "-extfile".into(),
                    p("ext.cnf").into(),
                    "-out".into(),
                    p("cert.pem").into(),
                ])
                .collect(),
        ];
        for args in &steps {
            match std::process::Command::new("openssl").args(args).output() {
                Ok(o) if o.status.success() => {}
                other => {
                    println!("skipping: openssl cannot make the test certificates ({other:?})");
                    return;
                }
            }
        }
        let (cert, key, ca) = (p("cert.pem"), p("key.pem"), p("ca.pem"));
        use rustls::pki_types::pem::PemObject;
        let chain = vec![rustls::pki_types::CertificateDer::from_pem_file(&cert).expect("cert")];
        let pk = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, pk)
                .expect("server config"),
        );
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "https://127.0.0.1:{}/alerts",
            l.local_addr().expect("addr").port()
        );
        let server = std::thread::spawn(move || {
            serve(l, 0, 2, move |s| {
                let conn = rustls::ServerConnection::new(Arc::clone(&server_config)).expect("tls");
                rustls::StreamOwned::new(conn, s)
            })
        });
        let mut sink = WebhookSink::start(WebhookConfig {
            ca_file: Some(ca.clone()),
            ..WebhookConfig::new(&url)
        })
        .expect("start");
        assert!(sink.enqueue("{\"tls\":1}".into()));
        assert!(sink.enqueue("{\"tls\":2}".into()));
        let report = sink.finish().expect("finish");
        assert_eq!(report.get(Counter::WebhookSent), 2, "{report:?}");
        let seen = server.join().expect("server");
        assert_eq!(seen.bodies, ["{\"tls\":1}", "{\"tls\":2}"]);
        assert_eq!(seen.connections, 1);

        // Mozilla's roots do not know this certificate: every attempt fails, and says why.
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let refuser = std::thread::spawn(move || {
            // Accept the attempts and let their handshakes fail.
            for _ in 0..2 {
                if let Ok((s, _)) = l.accept() {
                    drop(s);
                }
            }
        });
        let mut sink = WebhookSink::start(WebhookConfig {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(10),
            ..WebhookConfig::new(&format!("https://127.0.0.1:{port}/"))
        })
        .expect("start");
        assert!(sink.enqueue("{}".into()));
        let report = sink.finish().expect("finish");
        assert_eq!(report.get(Counter::WebhookFailed), 1, "{report:?}");
        refuser.join().expect("refuser");
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
            report.notes.iter().any(|n| n.contains("onnect")),
            "{report:?}"
        );
    }
}
