//! Live capture with libpcap (the `live` feature): opens an interface, applies the BPF filter
//! and feeds every frame to the flow engine, with a periodic wall-clock tick. It does not
//! decode packets or write flows itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metaids_flow::{
    FlowEngine, FlowError, FlowRecord, FlowSource, KernelStats, LinkType, Packet, SourceReport,
    Step,
};

use crate::{CaptureError, LiveConfig, LiveStats, StopReason};

fn pcap_err(context: impl Into<String>) -> impl FnOnce(pcap::Error) -> CaptureError {
    let context = context.into();
    move |e| CaptureError::Pcap {
        context,
        message: e.to_string(),
    }
}

/// Microseconds since the Unix epoch, by the wall clock.
fn wall_clock_us() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// An open live capture on one interface.
pub struct LiveCapture {
    cap: pcap::Capture<pcap::Active>,
    link: LinkType,
    config: LiveConfig,
}

impl std::fmt::Debug for LiveCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCapture")
            .field("link", &self.link)
            .field("config", &self.config)
            .finish()
    }
}

impl LiveCapture {
    /// Opens the interface and applies the filter. Packets arriving from now on are buffered
    /// by the kernel until a [`LiveSource`] reads them.
    ///
    /// Errors: [`CaptureError::Config`], [`CaptureError::Pcap`] (no such interface, no
    /// permission, a filter that does not compile).
    pub fn open(config: &LiveConfig) -> Result<Self, CaptureError> {
        config.validate()?;
        let iface = config.interface.as_str();
        let timeout_ms = i32::try_from(config.read_timeout.as_millis()).unwrap_or(i32::MAX);
        let mut inactive = pcap::Capture::from_device(iface)
            .map_err(pcap_err(format!("interface {iface}")))?
            .promisc(config.promiscuous)
            .snaplen(config.snaplen)
            // Packets are handed over as they arrive, not in batches.
            .immediate_mode(true)
            .timeout(timeout_ms.max(1));
        if let Some(size) = config.buffer_size {
            inactive = inactive.buffer_size(size);
        }
        // Non-blocking: libpcap's read timeout does not fire on Linux while an interface is
        // idle (TPACKET_V3 and, as observed on lo, V2), so a blocking read would never let the
        // loop see the stop flag or run the tick. `run` sleeps briefly when no packet waits.
        let mut cap = inactive
            .open()
            .map_err(pcap_err(format!("open interface {iface}")))?
            .setnonblock()
            .map_err(pcap_err(format!("set interface {iface} non-blocking")))?;
        if let Some(filter) = &config.filter {
            cap.filter(filter, true)
                .map_err(pcap_err(format!("set BPF filter {filter:?}")))?;
        }
        let link = LinkType(cap.get_datalink().0 as u32);
        Ok(LiveCapture {
            cap,
            link,
            config: config.clone(),
        })
    }

    /// The interface's link-layer type.
    pub fn link_type(&self) -> LinkType {
        self.link
    }
}

/// A live capture feeding its flow engine: the [`FlowSource`] of an interface.
///
/// Expiry follows packet timestamps, plus a wall-clock [`FlowEngine::tick`] every
/// [`LiveConfig::tick_interval`], so idle flows are emitted while the link is quiet. The stop
/// flag and the limits are checked between packets and at least every 2 ms while none arrives;
/// once one of them ends the capture, the live flows are ended ([`FlowEngine::finish`]) and
/// handed out, and libpcap's drop counters read.
pub struct LiveSource {
    capture: LiveCapture,
    engine: FlowEngine,
    stop: Arc<AtomicBool>,
    name: String,
    started: Instant,
    last_tick: Instant,
    /// Packets, flows, ticks and the stop reason (libpcap's counters live in `kernel`).
    stats: LiveStats,
    kernel: Option<KernelStats>,
    done: bool,
}

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSource")
            .field("capture", &self.capture)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Packets read per [`FlowSource::next_flows`] call at most.
const PACKETS_PER_STEP: usize = 1024;

impl LiveSource {
    /// Starts reading `capture` into `engine` until `stop` is set or a limit of the capture's
    /// configuration is reached. Its name is `live:IFACE`.
    pub fn new(capture: LiveCapture, engine: FlowEngine, stop: Arc<AtomicBool>) -> Self {
        let now = Instant::now();
        LiveSource {
            name: format!("live:{}", capture.config.interface),
            capture,
            engine,
            stop,
            started: now,
            last_tick: now,
            stats: LiveStats::START,
            kernel: None,
            done: false,
        }
    }

    /// What the capture did so far (libpcap's counters as of the last tick, and at the end).
    pub fn stats(&self) -> LiveStats {
        let k = self.kernel.unwrap_or_default();
        LiveStats {
            received: k.received,
            dropped: k.dropped,
            if_dropped: k.if_dropped,
            ..self.stats
        }
    }

    /// The flow engine.
    pub fn engine(&self) -> &FlowEngine {
        &self.engine
    }

    fn stop_reason(&self) -> Option<StopReason> {
        let config = &self.capture.config;
        if self.stop.load(Ordering::Relaxed) {
            Some(StopReason::Requested)
        } else if config.max_packets.is_some_and(|m| self.stats.packets >= m) {
            Some(StopReason::PacketLimit)
        } else if config
            .max_duration
            .is_some_and(|d| self.started.elapsed() >= d)
        {
            Some(StopReason::TimeLimit)
        } else {
            None
        }
    }

    fn tick(&mut self, out: &mut Vec<FlowRecord>) {
        if self.last_tick.elapsed() >= self.capture.config.tick_interval {
            self.last_tick = Instant::now();
            self.stats.ticks += 1;
            out.extend(self.engine.tick(wall_clock_us()));
            // libpcap's counters, kept current for a long-running consumer's metrics.
            if let Ok(s) = self.capture.cap.stats() {
                self.kernel = Some(KernelStats {
                    received: u64::from(s.received),
                    dropped: u64::from(s.dropped),
                    if_dropped: u64::from(s.if_dropped),
                });
            }
        }
    }
}

impl FlowSource for LiveSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_flows(&mut self, out: &mut Vec<FlowRecord>) -> Result<Step, FlowError> {
        if self.done {
            return Ok(Step::Done);
        }
        let before = out.len();
        let mut step = Step::Flows;
        for _ in 0..PACKETS_PER_STEP {
            if let Some(reason) = self.stop_reason() {
                self.stats.stop = reason;
                out.extend(self.engine.finish());
                self.kernel = self.capture.cap.stats().ok().map(|s| KernelStats {
                    received: u64::from(s.received),
                    dropped: u64::from(s.dropped),
                    if_dropped: u64::from(s.if_dropped),
                });
                self.done = true;
                step = Step::Done;
                break;
            }
            match self.capture.cap.next_packet() {
                Ok(p) => {
                    // `time_t`/`suseconds_t` are i64 here but narrower on some targets.
                    #[allow(clippy::useless_conversion)]
                    let ts_us = i64::from(p.header.ts.tv_sec)
                        .saturating_mul(1_000_000)
                        .saturating_add(i64::from(p.header.ts.tv_usec));
                    let pkt = Packet {
                        link_type: self.capture.link,
                        ts_us,
                        data: p.data,
                        orig_len: p.header.len,
                        interface: 0,
                    };
                    self.stats.packets += 1;
                    out.extend(self.engine.push(&pkt));
                }
                Err(pcap::Error::TimeoutExpired) => {
                    let idle = self
                        .capture
                        .config
                        .read_timeout
                        .min(Duration::from_millis(2));
                    std::thread::sleep(idle);
                    step = Step::Idle;
                }
                Err(e) => {
                    return Err(FlowError::Source {
                        name: self.name.clone(),
                        source: Box::new(pcap_err("read packet")(e)),
                    })
                }
            }
            self.tick(out);
            if step == Step::Idle {
                break;
            }
        }
        self.stats.flows += (out.len() - before) as u64;
        Ok(step)
    }

    fn report(&self) -> SourceReport {
        SourceReport {
            name: self.name.clone(),
            engine: self.engine.stats().clone(),
            reader: None,
            kernel: self.kernel,
            ended_early: None,
        }
    }

    fn is_live(&self) -> bool {
        true
    }
}
