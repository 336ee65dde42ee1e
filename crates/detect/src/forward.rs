//! Alerts forwarded as they are written, the way Suricata's EVE outputs do besides a file: to
//! syslog as RFC 5424 messages (over UDP, or the local `/dev/log` datagram socket), or as JSON
//! lines to a unix socket (stream or datagram) a log shipper listens on.
//!
//! A forwarder never holds detection up: writes have a short timeout, a message that cannot be
//! sent is dropped and counted, and a broken stream connection is reopened at most once a second.
//! The alerts file stays the record of truth.

use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{DetectError, Result};
use crate::sink::{Batch, Counter, Sink, SinkReport, Stage};

/// Longest a write may take before the message is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_millis(200);
/// Largest syslog datagram (RFC 5424 receivers must take 480 bytes and should take 2048; alerts with
/// an embedding run to a few kB, which UDP on loopback and `/dev/log` carry).
const MAX_DATAGRAM: usize = 64 * 1024;

/// Where alerts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// RFC 5424 syslog over UDP to `host:port`.
    SyslogUdp(String),
    /// RFC 5424 syslog to a local datagram socket (`/dev/log`).
    SyslogUnix(PathBuf),
    /// JSON lines to a unix stream socket.
    UnixStream(PathBuf),
    /// One JSON line per datagram to a unix datagram socket.
    UnixDgram(PathBuf),
}

impl Target {
    /// Parses `syslog:udp://HOST:PORT`, `syslog:unix:PATH`, `unix-stream:PATH` or
    /// `unix-dgram:PATH`.
    pub fn parse(text: &str) -> Result<Self> {
        let err = |m: &str| {
            DetectError::Config {
            field: "forward",
            message: format!(
                "{text:?}: {m} (expected syslog:udp://HOST:PORT, syslog:unix:PATH, unix-stream:PATH or unix-dgram:PATH)"
            ),
        }
        };
        let nonempty = |p: &str| {
            if p.is_empty() {
                Err(err("no path"))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        if let Some(addr) = text.strip_prefix("syslog:udp://") {
            if addr
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(err("no HOST:PORT"));
            }
            Ok(Target::SyslogUdp(addr.to_string()))
        } else if let Some(p) = text.strip_prefix("syslog:unix:") {
            Ok(Target::SyslogUnix(nonempty(p)?))
        } else if let Some(p) = text.strip_prefix("unix-stream:") {
            Ok(Target::UnixStream(nonempty(p)?))
        } else if let Some(p) = text.strip_prefix("unix-dgram:") {
            Ok(Target::UnixDgram(nonempty(p)?))
        } else {
            Err(err("unknown target"))
        }
    }
}

/// The syslog severity of an alert of metaids severity `s` (1 high … 4 low): critical, error,
/// warning, notice.
pub fn syslog_severity(s: u8) -> u8 {
    match s {
        0 | 1 => 2,
        2 => 3,
        3 => 4,
        _ => 5,
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOST metaids PID alert - JSON` (facility `facility`,
/// 0–23; structured data none; the JSON line as the message).
pub fn rfc5424(facility: u8, severity: u8, timestamp: &str, host: &str, line: &str) -> String {
    let pri = u16::from(facility.min(23)) * 8 + u16::from(severity.min(7));
    // RFC 5424 header fields are printable ASCII without spaces, at most 255 characters.
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let host = if host.is_empty() { "-".into() } else { host };
    format!(
        "<{pri}>1 {timestamp} {host} metaids {} alert - {line}",
        std::process::id()
    )
}

/// RFC 3339 with microseconds (`2026-12-03T14:43:27.123456Z`) of the EVE timestamp
/// `2026-12-03T14:43:27.123456+0000`.
fn rfc3339(eve: &str) -> String {
    match eve.strip_suffix("+0000") {
        Some(t) => format!("{t}Z"),
        None => "-".into(),
    }
}

enum Conn {
    Udp(UdpSocket, String),
    UnixDgram(UnixDatagram, PathBuf),
    Stream(Option<UnixStream>, PathBuf),
}

/// The forwarding sink.
pub struct ForwardSink {
    target: Target,
    conn: Conn,
    facility: u8,
    host: String,
    last_connect: Option<Instant>,
    sent: u64,
    dropped: u64,
    last_error: Option<String>,
}

impl std::fmt::Debug for ForwardSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardSink")
            .field("target", &self.target)
            .field("sent", &self.sent)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl ForwardSink {
    /// A forwarder to `target`; syslog messages carry `facility` (0–23; Suricata's default is
    /// local5, 21) and the sensor name `host`. A unix stream socket that is not there yet is
    /// connected to later; the other targets must be reachable now.
    pub fn create(target: Target, facility: u8, host: &str) -> Result<Self> {
        if facility > 23 {
            return Err(DetectError::Config {
                field: "syslog facility",
                message: format!("expected 0 to 23, found {facility}"),
            });
        }
        let io = |what: String| {
            move |e: std::io::Error| DetectError::Sink {
                sink: "forward".into(),
                message: format!("{what}: {e}"),
            }
        };
        let conn = match &target {
            Target::SyslogUdp(addr) => {
                let s = UdpSocket::bind(if addr.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })
                .map_err(io(format!("a UDP socket for {addr}")))?;
                s.set_write_timeout(Some(WRITE_TIMEOUT))
                    .map_err(io(addr.clone()))?;
                Conn::Udp(s, addr.clone())
            }
            Target::SyslogUnix(p) | Target::UnixDgram(p) => {
                let s = UnixDatagram::unbound().map_err(io(p.display().to_string()))?;
                s.set_write_timeout(Some(WRITE_TIMEOUT))
                    .map_err(io(p.display().to_string()))?;
                Conn::UnixDgram(s, p.clone())
            }
            Target::UnixStream(p) => Conn::Stream(None, p.clone()),
        };
        Ok(ForwardSink {
            target,
            conn,
            facility,
            host: host.to_string(),
            last_connect: None,
            sent: 0,
            dropped: 0,
            last_error: None,
        })
    }

    /// Sends one alert line (its EVE `timestamp` and metaids `severity` for syslog).
    pub fn send(&mut self, line: &str, timestamp: &str, severity: u8) {
        let message = match self.target {
            Target::SyslogUdp(_) | Target::SyslogUnix(_) => rfc5424(
                self.facility,
                syslog_severity(severity),
                &rfc3339(timestamp),
                &self.host,
                line,
            ),
            Target::UnixStream(_) | Target::UnixDgram(_) => line.to_string(),
        };
        let sent = match &mut self.conn {
            Conn::Udp(s, addr) => {
                if message.len() > MAX_DATAGRAM {
                    Err(format!("message of {} bytes", message.len()))
                } else {
                    s.send_to(message.as_bytes(), addr.as_str())
                        .map(|_| ())
                        .map_err(|e| format!("{addr}: {e}"))
                }
            }
            Conn::UnixDgram(s, path) => s
                .send_to(message.as_bytes(), &*path)
                .map(|_| ())
                .map_err(|e| format!("{}: {e}", path.display())),
            Conn::Stream(stream, path) => {
                if stream.is_none()
                    && self
                        .last_connect
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                {
                    self.last_connect = Some(Instant::now());
                    *stream = UnixStream::connect(&*path)
                        .and_then(|s| s.set_write_timeout(Some(WRITE_TIMEOUT)).map(|()| s))
                        .map_err(|e| self.last_error = Some(format!("{}: {e}", path.display())))
                        .ok();
                }
                match stream {
                    Some(s) => {
                        let mut buf = message.into_bytes();
                        buf.push(b'\n');
                        let r = s
                            .write_all(&buf)
                            .map_err(|e| format!("{}: {e}", path.display()));
                        if r.is_err() {
                            // Reconnect (at most once a second) for the next alert.
                            *stream = None;
                        }
                        r
                    }
                    None => Err(format!("{}: not connected", path.display())),
                }
            }
        };
        match sent {
            Ok(()) => self.sent += 1,
            Err(e) => {
                self.dropped += 1;
                self.last_error = Some(e);
            }
        }
    }
}

impl Sink for ForwardSink {
    fn name(&self) -> &str {
        "forward"
    }

    fn stage(&self) -> Stage {
        Stage::Respond
    }

    fn write_batch(&mut self, batch: &Batch<'_>) -> Result<()> {
        for a in batch.alerts {
            let severity = a.event.alert.as_ref().map_or(3, |x| x.severity);
            self.send(&a.line, &a.event.timestamp, severity);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport> {
        let mut notes = Vec::new();
        if let Some(e) = &self.last_error {
            notes.push(format!("last forwarding failure: {e}"));
        }
        Ok(SinkReport {
            sink: "forward".into(),
            counters: vec![
                (Counter::ForwardSent, self.sent),
                (Counter::ForwardDropped, self.dropped),
            ],
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    const TS: &str = "2026-12-03T14:43:27.123456+0000";

    #[test]
    fn targets_parse_and_messages_follow_rfc_5424() {
        assert_eq!(
            Target::parse("syslog:udp://127.0.0.1:514").expect("udp"),
            Target::SyslogUdp("127.0.0.1:514".into())
        );
        assert_eq!(
            Target::parse("syslog:unix:/dev/log").expect("unix"),
            Target::SyslogUnix("/dev/log".into())
        );
        assert!(matches!(
            Target::parse("unix-stream:/run/x.sock"),
            Ok(Target::UnixStream(_))
        ));
        for bad in [
            "syslog:udp://nohost",
            "syslog:udp://:514",
            "unix-dgram:",
            "kafka:x",
            "",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
        let m = rfc5424(
            21,
            syslog_severity(1),
            &rfc3339(TS),
            "sensor 1",
            "{\"a\":1}",
        );
        // local5 (21) × 8 + critical (2) = 170; the host's space removed.
        assert!(
            m.starts_with("<170>1 2026-12-03T14:43:27.123456Z sensor1 metaids "),
            "{m}"
        );
        assert!(m.ends_with(" alert - {\"a\":1}"), "{m}");
        assert_eq!(syslog_severity(4), 5);
        assert!(ForwardSink::create(Target::UnixStream("/x".into()), 24, "h").is_err());
    }

    #[test]
    fn alerts_reach_udp_syslog_and_unix_sockets() {
        let dir = tempfile::tempdir().expect("tmp");
        // UDP syslog on loopback.
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let target = Target::SyslogUdp(rx.local_addr().expect("addr").to_string());
        let mut f = ForwardSink::create(target, 21, "sensor").expect("udp");
        f.send("{\"n\":1}", TS, 2);
        let mut buf = [0u8; 4096];
        let n = rx.recv(&mut buf).expect("datagram");
        let got = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            got.starts_with("<171>1 2026-12-03T14:43:27.123456Z sensor metaids "),
            "{got}"
        );
        assert!(got.ends_with("{\"n\":1}"), "{got}");

        // A unix datagram socket.
        let path = dir.path().join("dgram.sock");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let mut f = ForwardSink::create(Target::UnixDgram(path), 21, "s").expect("dgram");
        f.send("{\"n\":2}", TS, 3);
        let n = rx.recv(&mut buf).expect("datagram");
        assert_eq!(&buf[..n], b"{\"n\":2}");

        // A unix stream socket: lines; not listening yet, then listening (reconnected after a
        // second), then gone again — drops counted, never an error or a hang.
        let path = dir.path().join("stream.sock");
        let mut f = ForwardSink::create(Target::UnixStream(path.clone()), 21, "s").expect("stream");
        f.send("{\"n\":0}", TS, 3);
        assert_eq!((f.sent, f.dropped), (0, 1));
        let listener = UnixListener::bind(&path).expect("listen");
        std::thread::sleep(Duration::from_millis(1100));
        f.send("{\"n\":3}", TS, 3);
        f.send("{\"n\":4}", TS, 3);
        let (conn, _) = listener.accept().expect("accept");
        let mut lines = std::io::BufReader::new(conn).lines();
        assert_eq!(lines.next().expect("line").expect("read"), "{\"n\":3}");
        assert_eq!(lines.next().expect("line").expect("read"), "{\"n\":4}");
        assert_eq!((f.sent, f.dropped), (2, 1));
        let report = f.finish().expect("finish");
        assert_eq!(report.get(Counter::ForwardSent), 2);
        assert_eq!(report.get(Counter::ForwardDropped), 1);
    }
}
