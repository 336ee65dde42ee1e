//! What the scoring worker and the API share: Prometheus metrics, the recent alerts behind
//! `GET /alerts`, the stop and reopen flags, and the library generation an API change bumps so the
//! worker reloads at its next micro-batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A verdict kind label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `benign`, `threat` or `unknown`.
    pub kind: String,
}

/// A threat label (`unknown` for unknown-anomaly alerts).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThreatLabel {
    /// The threat's name.
    pub threat: String,
}

/// An API request label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The matched route (`/api/v1/threats/{name}`), or `unmatched`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// HTTP status code.
    pub status: u16,
}

/// A version label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    /// The model's version (a prefix of its identity).
    pub version: String,
}

/// Every metric `/metrics` exposes.
pub struct Metrics {
    registry: Registry,
    /// Packets read from captures.
    pub packets: Counter,
    /// Flows given a verdict.
    pub flows: Counter,
    /// HTTP requests given a verdict (a web-request model).
    pub http_requests: Counter,
    /// Verdicts by kind.
    pub verdicts: Family<KindLabel, Counter>,
    /// Alerts written, by threat.
    pub alerts: Family<ThreatLabel, Counter>,
    /// Alerts suppressed by deduplication.
    pub suppressed: Counter,
    /// Captures scored to their end.
    pub files_done: Counter,
    /// Captures that could not be read (or ended early on a corrupt body).
    pub files_failed: Counter,
    /// Micro-batch latency (preprocessing, embedding, verdicts, alert formatting).
    pub batch_latency: Histogram,
    /// Unknown share of the last closed drift window.
    pub unknown_share: Gauge<f64, AtomicU64>,
    /// Kolmogorov–Smirnov distance of the last closed drift window from the reference.
    pub drift_ks: Gauge<f64, AtomicU64>,
    /// Drift windows past a bound.
    pub drift_warnings: Gauge,
    /// The armed library version.
    pub library_version: Gauge,
    /// Threats armed.
    pub threats: Gauge,
    /// Library reloads applied.
    pub reloads: Counter,
    /// Library reloads that failed (the previous version stays armed).
    pub reload_failures: Counter,
    /// Model swaps applied (the model file changed and passed the compatibility check).
    pub model_swaps: Counter,
    /// Model swaps refused (unreadable, another input layout, or the library is another model's).
    pub model_swap_failures: Counter,
    /// The model (value 1, its version as a label).
    pub model: Family<VersionLabel, Gauge>,
    /// API requests by route, method and status.
    pub requests: Family<RouteLabel, Counter>,
    /// EVE file reopenings (SIGHUP).
    pub eve_reopens: Counter,
    /// Packets the kernel dropped on the live interface (libpcap's count; 0 without one).
    pub capture_dropped: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("metaids"),
            packets: Counter::default(),
            flows: Counter::default(),
            http_requests: Counter::default(),
            verdicts: Family::default(),
            alerts: Family::default(),
            suppressed: Counter::default(),
            files_done: Counter::default(),
            files_failed: Counter::default(),
            batch_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            unknown_share: Gauge::default(),
            drift_ks: Gauge::default(),
            drift_warnings: Gauge::default(),
            library_version: Gauge::default(),
            threats: Gauge::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
            model_swaps: Counter::default(),
            model_swap_failures: Counter::default(),
            model: Family::default(),
            requests: Family::default(),
            eve_reopens: Counter::default(),
            capture_dropped: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register("packets", "Packets read from captures", m.packets.clone());
        r.register("flows", "Flows given a verdict", m.flows.clone());
        r.register(
            "http_requests",
            "HTTP requests given a verdict (a web-request model)",
            m.http_requests.clone(),
        );
        r.register("verdicts", "Verdicts by kind", m.verdicts.clone());
        r.register("alerts", "Alerts written, by threat", m.alerts.clone());
        r.register(
            "alerts_suppressed",
            "Alerts suppressed by deduplication",
            m.suppressed.clone(),
        );
        r.register("files_done", "Captures scored", m.files_done.clone());
        r.register(
            "files_failed",
            "Captures unreadable or ended early",
            m.files_failed.clone(),
        );
        r.register(
            "batch_latency_seconds",
            "Micro-batch latency: preprocessing, embedding, verdicts, alert formatting",
            m.batch_latency.clone(),
        );
        r.register(
            "unknown_share",
            "Unknown-verdict share of the last closed drift window",
            m.unknown_share.clone(),
        );
        r.register(
            "drift_ks",
            "KS distance of the last closed window's benign distances from the reference's",
            m.drift_ks.clone(),
        );
        r.register(
            "drift_warnings",
            "Drift windows past a bound",
            m.drift_warnings.clone(),
        );
        r.register(
            "library_version",
            "The armed threat library version",
            m.library_version.clone(),
        );
        r.register("threats", "Threats armed", m.threats.clone());
        r.register("reloads", "Library reloads applied", m.reloads.clone());
        r.register(
            "reload_failures",
            "Library reloads that failed (the previous version stays armed)",
            m.reload_failures.clone(),
        );
        r.register(
            "model_swaps",
            "Model swaps applied after the compatibility check",
            m.model_swaps.clone(),
        );
        r.register(
            "model_swap_failures",
            "Model swaps refused (the previous model stays armed)",
            m.model_swap_failures.clone(),
        );
        r.register("model_info", "The model's version", m.model.clone());
        r.register(
            "api_requests",
            "API requests by route, method and status",
            m.requests.clone(),
        );
        r.register("eve_reopens", "EVE file reopenings", m.eve_reopens.clone());
        r.register(
            "capture_dropped",
            "Packets the kernel dropped on the live interface",
            m.capture_dropped.clone(),
        );
        m
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The newest alerts, each with a sequence number (1, 2, …) for `GET /alerts?since=`.
#[derive(Debug)]
pub struct RecentAlerts {
    capacity: usize,
    next: u64,
    ring: VecDeque<(u64, Arc<str>)>,
}

/// One page of [`RecentAlerts::page`].
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPage {
    /// `(sequence, EVE JSON line)`, oldest first.
    pub alerts: Vec<(u64, Arc<str>)>,
    /// The sequence to ask from next (`since` for the next call).
    pub next: u64,
    /// Alerts after `since` that are no longer held (the ring moved past them).
    pub missed: u64,
}

impl RecentAlerts {
    /// Holds at most `capacity` alerts.
    pub fn new(capacity: usize) -> Self {
        RecentAlerts {
            capacity: capacity.max(1),
            next: 1,
            ring: VecDeque::new(),
        }
    }

    /// Appends one alert line.
    pub fn push(&mut self, line: Arc<str>) {
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back((self.next, line));
        self.next += 1;
    }

    /// The held alert whose `metaids.alert_id` is `id` (alert ids hold no JSON escapes).
    pub fn find(&self, id: &str) -> Option<Arc<str>> {
        self.ring
            .iter()
            .rev()
            .find(|(_, line)| metaids_detect::alert_id_on_line(line.as_bytes()) == Some(id))
            .map(|(_, line)| Arc::clone(line))
    }

    /// Alerts with a sequence above `since`, at most `limit`.
    pub fn page(&self, since: u64, limit: usize) -> AlertPage {
        let oldest = self.ring.front().map_or(self.next, |(s, _)| *s);
        let missed = oldest.saturating_sub(since.saturating_add(1));
        let alerts: Vec<(u64, Arc<str>)> = self
            .ring
            .iter()
            .filter(|(s, _)| *s > since)
            .take(limit)
            .cloned()
            .collect();
        let next = alerts
            .last()
            .map_or(since.max(oldest.saturating_sub(1)), |(s, _)| *s);
        AlertPage {
            alerts,
            next,
            missed,
        }
    }
}

/// What the worker reports about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// Whether the worker has armed its first detector and is scoring.
    pub ready: bool,
    /// The armed library version.
    pub library_version: u64,
    /// Threats armed.
    pub threats: usize,
    /// The model's version.
    pub model_version: String,
    /// Whether a site profile is armed.
    pub site_profile: bool,
    /// Captures scored since start.
    pub files_done: u64,
    /// The last reload or capture problem, if any.
    pub last_warning: Option<String>,
}

/// The library version the worker has armed, as the API serves it: threat reads answer from here
/// (what is deciding flows right now), never by opening the library file per request.
#[derive(Debug, Clone)]
pub struct ArmedView {
    /// The armed library version.
    pub version: u64,
    /// Its threats.
    pub threats: Vec<metaids_library::Threat>,
    /// `GET /threats`'s body, built once per version.
    pub list_json: String,
}

impl ArmedView {
    /// The view of `threats` of library `version`.
    pub fn new(version: u64, threats: Vec<metaids_library::Threat>) -> Self {
        let list = serde_json::json!({
            "library_version": version,
            "threats": threats.iter().map(threat_json).collect::<Vec<_>>(),
        });
        ArmedView {
            version,
            list_json: list.to_string(),
            threats,
        }
    }
}

/// A threat's summary in API bodies.
pub fn threat_json(t: &metaids_library::Threat) -> serde_json::Value {
    serde_json::json!({
        "name": t.name,
        "id": t.id,
        "signature_id": t.signature_id,
        "severity": t.severity,
        "category": t.category,
        "description": t.description,
        "created_by": t.created_by,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
        "threshold": t.threshold,
        "prototypes": t.prototypes.len(),
        "support_flows": t.support.len(),
        "negative_flows": t.negatives.len(),
    })
}

/// The model the service runs, swapped by the worker when the model file changes (after the
/// compatibility check); the API reads it for enrolments and library reads.
pub struct ModelCell(RwLock<Arc<metaids_model::ThreatModel>>);

impl ModelCell {
    /// A cell holding `model`.
    pub fn new(model: Arc<metaids_model::ThreatModel>) -> Arc<Self> {
        Arc::new(ModelCell(RwLock::new(model)))
    }

    /// The model now.
    pub fn get(&self) -> Arc<metaids_model::ThreatModel> {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Swaps in `model`.
    pub fn set(&self, model: Arc<metaids_model::ThreatModel>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = model;
    }
}

/// The shared state.
pub struct Shared {
    /// Metrics.
    pub metrics: Metrics,
    alerts: Mutex<RecentAlerts>,
    status: Mutex<Status>,
    stop: AtomicBool,
    reopen: AtomicBool,
    generation: AtomicU64,
    /// Counts the events the idle worker waits for (a stop, a library change, a reopen request),
    /// with the condition variable that wakes it.
    wakes: Mutex<u64>,
    woken: Condvar,
    /// Serialises the API's library changes (one writer at a time within the process).
    pub library_write: Mutex<()>,
    armed: RwLock<Option<Arc<ArmedView>>>,
    started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind: keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Fresh state keeping `recent_alerts` alerts.
    pub fn new(recent_alerts: usize) -> Arc<Self> {
        Arc::new(Shared {
            metrics: Metrics::new(),
            alerts: Mutex::new(RecentAlerts::new(recent_alerts)),
            status: Mutex::new(Status::default()),
            stop: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            wakes: Mutex::new(0),
            woken: Condvar::new(),
            library_write: Mutex::new(()),
            armed: RwLock::new(None),
            started: Instant::now(),
        })
    }

    /// Asks the worker and the API to stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Whether a stop was asked.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Asks for the EVE file to be reopened (SIGHUP).
    pub fn request_reopen(&self) {
        self.reopen.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Takes a pending reopen request.
    pub fn take_reopen(&self) -> bool {
        self.reopen.swap(false, Ordering::SeqCst)
    }

    /// Records that the library changed (the worker reloads at its next batch).
    pub fn library_changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.wake();
    }

    /// Wakes the idle worker (after the flag it should see is set).
    fn wake(&self) {
        *lock(&self.wakes) += 1;
        self.woken.notify_all();
    }

    /// The wake count now: read it before looking at the flags, then [`Shared::wait`] with it, and
    /// no wake in between is missed.
    pub fn wakes(&self) -> u64 {
        *lock(&self.wakes)
    }

    /// Waits until a wake after `seen` (a [`Shared::wakes`] value) or `timeout`, whichever comes
    /// first; whether it was woken.
    pub fn wait(&self, seen: u64, timeout: Duration) -> bool {
        let guard = lock(&self.wakes);
        let (guard, _) = self
            .woken
            .wait_timeout_while(guard, timeout, |n| *n == seen)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard != seen
    }

    /// How many changes were recorded.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Adds an alert line.
    pub fn push_alert(&self, line: Arc<str>) {
        lock(&self.alerts).push(line);
    }

    /// The recent alert with the id `id`, if still held.
    pub fn find_alert(&self, id: &str) -> Option<Arc<str>> {
        lock(&self.alerts).find(id)
    }

    /// A page of recent alerts.
    pub fn alerts(&self, since: u64, limit: usize) -> AlertPage {
        lock(&self.alerts).page(since, limit)
    }

    /// The worker's status.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// Changes the worker's status.
    pub fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut lock(&self.status));
    }

    /// Publishes the version the worker armed.
    pub fn set_armed(&self, view: ArmedView) {
        *self
            .armed
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(view));
    }

    /// The armed version (`None` before the worker armed one).
    pub fn armed(&self) -> Option<Arc<ArmedView>> {
        self.armed
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Time since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_alerts_page_and_count_what_was_missed() {
        let mut r = RecentAlerts::new(3);
        let p = r.page(0, 10);
        assert!(p.alerts.is_empty());
        assert_eq!((p.next, p.missed), (0, 0));
        for i in 1..=5 {
            r.push(Arc::from(format!("{{\"n\":{i}}}")));
        }
        // Holds 3, 4, 5: 1 and 2 are gone.
        let p = r.page(0, 10);
        assert_eq!(p.alerts.iter().map(|a| a.0).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!((p.next, p.missed), (5, 2));
        let p = r.page(3, 1);
        assert_eq!(p.alerts.iter().map(|a| a.0).collect::<Vec<_>>(), [4]);
        assert_eq!((p.next, p.missed), (4, 0));
        let p = r.page(5, 10);
        assert!(p.alerts.is_empty());
        assert_eq!((p.next, p.missed), (5, 0));
    }

    #[test]
    fn a_change_wakes_the_idle_worker_and_none_is_missed() {
        let s = Shared::new(4);
        // Nothing happened: the wait runs to its timeout.
        let seen = s.wakes();
        let t = Instant::now();
        assert!(!s.wait(seen, Duration::from_millis(30)));
        assert!(t.elapsed() >= Duration::from_millis(30));
        // A change between reading the count and waiting is not missed.
        let seen = s.wakes();
        s.library_changed();
        let t = Instant::now();
        assert!(s.wait(seen, Duration::from_secs(30)));
        assert!(t.elapsed() < Duration::from_secs(5));
        // A change from another thread ends a long wait early; so do a reopen and a stop.
        for change in [
            Shared::library_changed as fn(&Shared),
            Shared::request_reopen,
            Shared::request_stop,
        ] {
            let seen = s.wakes();
            let other = Arc::clone(&s);
            let h = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                change(&other);
            });
            let t = Instant::now();
            assert!(s.wait(seen, Duration::from_secs(30)));
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
            h.join().expect("thread");
        }
        assert!(s.take_reopen() && s.stopping());
        assert_eq!(s.generation(), 2);
    }

    #[test]
    fn metrics_encode_with_prefix_and_suffixes() {
        let s = Shared::new(4);
        s.metrics.flows.inc_by(7);
        s.metrics
            .verdicts
            .get_or_create(&KindLabel {
                kind: "benign".into(),
            })
            .inc();
        s.metrics.batch_latency.observe(0.002);
        let text = s.metrics.encode();
        assert!(text.contains("metaids_flows_total 7"), "{text}");
        assert!(
            text.contains("metaids_verdicts_total{kind=\"benign\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("metaids_batch_latency_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
