//! Live capture with libpcap (the `live` feature): opens an interface, applies the BPF filter
//! and feeds every frame to the flow engine, with a periodic wall-clock tick. It does not
//! decode packets or write flows itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metaids_flow::{FlowEngine, FlowError, FlowRecord, LinkType, Packet};

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
    /// by the kernel until [`LiveCapture::run`] reads them.
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

    /// Reads packets into `engine` until `stop` is set or a limit of the configuration is
    /// reached, handing every finished flow to `on_flow`; then ends the live flows
    /// ([`FlowEngine::finish`]) and hands them over too.
    ///
    /// Expiry follows packet timestamps, plus a wall-clock [`FlowEngine::tick`] every
    /// [`LiveConfig::tick_interval`], so idle flows are emitted while the link is quiet. The
    /// stop flag is checked between packets and at least every 2 ms while none arrives.
    pub fn run<F>(
        &mut self,
        engine: &mut FlowEngine,
        stop: &AtomicBool,
        mut on_flow: F,
    ) -> Result<LiveStats, CaptureError>
    where
        F: FnMut(FlowRecord) -> Result<(), FlowError>,
    {
        let started = Instant::now();
        let idle_sleep = self.config.read_timeout.min(Duration::from_millis(2));
        let mut last_tick = started;
        let mut stats = LiveStats {
            packets: 0,
            flows: 0,
            ticks: 0,
            received: 0,
            dropped: 0,
            if_dropped: 0,
            stop: StopReason::Requested,
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                stats.stop = StopReason::Requested;
                break;
            }
            if self.config.max_packets.is_some_and(|m| stats.packets >= m) {
                stats.stop = StopReason::PacketLimit;
                break;
            }
            if self
                .config
                .max_duration
                .is_some_and(|d| started.elapsed() >= d)
            {
                stats.stop = StopReason::TimeLimit;
                break;
            }
            match self.cap.next_packet() {
                Ok(p) => {
                    // `time_t`/`suseconds_t` are i64 here but narrower on some targets.
                    #[allow(clippy::useless_conversion)]
                    let ts_us = i64::from(p.header.ts.tv_sec)
                        .saturating_mul(1_000_000)
                        .saturating_add(i64::from(p.header.ts.tv_usec));
                    let pkt = Packet {
                        link_type: self.link,
                        ts_us,
                        data: p.data,
                        orig_len: p.header.len,
                        interface: 0,
                    };
                    stats.packets += 1;
                    for flow in engine.push(&pkt) {
                        stats.flows += 1;
                        on_flow(flow)?;
                    }
                }
                Err(pcap::Error::TimeoutExpired) => std::thread::sleep(idle_sleep),
                Err(e) => return Err(pcap_err("read packet")(e)),
            }
            if last_tick.elapsed() >= self.config.tick_interval {
                last_tick = Instant::now();
                stats.ticks += 1;
                for flow in engine.tick(wall_clock_us()) {
                    stats.flows += 1;
                    on_flow(flow)?;
                }
            }
        }
        for flow in engine.finish() {
            stats.flows += 1;
            on_flow(flow)?;
        }
        if let Ok(s) = self.cap.stats() {
            stats.received = u64::from(s.received);
            stats.dropped = u64::from(s.dropped);
            stats.if_dropped = u64::from(s.if_dropped);
        }
        Ok(stats)
    }
}
