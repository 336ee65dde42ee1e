//! Drift of the traffic away from the benign reference the detector decides with (the site
//! profile's, or the model's), per time window of the flows' own timestamps: the share of unknown
//! verdicts, and the two-sample Kolmogorov–Smirnov distance `D` between the window's benign
//! distances (every flow's squared distance to the nearest benign prototype) and those of the
//! reference's calibration rows. A window of at least `min_flows` flows warns when `D` exceeds
//! `ks_bound` or the unknown share exceeds `unknown_bound`: the traffic no longer looks like what
//! the thresholds were calibrated on, so the false-positive budget no longer holds (learn the
//! baseline again). Memory is bounded: each window keeps a seeded reservoir of at most
//! `max_samples` distances, and the report keeps the last `max_windows` windows.
//!
//! The bounds (`D` 0.2, unknown share 5%, 200 flows, 300 s windows) were set by reasoning about
//! effect sizes, not chosen on validation sites; with 200 flows and 700+ reference rows, `D` 0.2 is
//! beyond the 0.1% significance level of the KS test (about 0.16), so a warning is not noise.

use serde::Serialize;

/// How drift is measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DriftConfig {
    /// Window length in seconds of flow time.
    pub window_s: f64,
    /// Fewest flows in a window for it to warn.
    pub min_flows: u64,
    /// KS distance above which a window warns.
    pub ks_bound: f64,
    /// Unknown-verdict share above which a window warns.
    pub unknown_bound: f64,
    /// Distances kept per window (a seeded reservoir).
    pub max_samples: usize,
    /// Windows kept in the report (the most recent).
    pub max_windows: usize,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            window_s: 300.0,
            min_flows: 200,
            ks_bound: 0.2,
            unknown_bound: 0.05,
            max_samples: 5000,
            max_windows: 10_000,
        }
    }
}

/// One closed window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowDrift {
    /// Window start, µs since the epoch (`None`: flows without timestamps).
    pub start_us: Option<i64>,
    /// Flows in the window.
    pub flows: u64,
    /// Unknown verdicts among them.
    pub unknown: u64,
    /// KS distance of the window's benign distances from the reference's.
    pub ks: f64,
    /// Whether the window warned.
    pub warned: bool,
}

impl WindowDrift {
    /// Unknown verdicts over flows.
    pub fn unknown_share(&self) -> f64 {
        self.unknown as f64 / self.flows.max(1) as f64
    }

    /// One line for a warning.
    pub fn describe(&self, cfg: &DriftConfig) -> String {
        let when = self.start_us.map_or_else(
            || "flows without timestamps".to_string(),
            |t| {
                format!(
                    "window from {} ({} s)",
                    metaids_core::time::format_timestamp_us(t),
                    cfg.window_s
                )
            },
        );
        format!(
            "drift in {when}: {} flows, benign-distance KS distance {:.3} from the reference (bound {}), unknown share {:.1}% (bound {:.1}%): the traffic has moved from what the thresholds were calibrated on; learn the baseline again (`metaids baseline --update`)",
            self.flows,
            self.ks,
            cfg.ks_bound,
            100.0 * self.unknown_share(),
            100.0 * cfg.unknown_bound
        )
    }
}

/// What drift monitoring found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DriftReport {
    /// Closed windows, oldest first (the last `max_windows`).
    pub windows: Vec<WindowDrift>,
    /// Windows that warned, over the whole run.
    pub warnings: u64,
    /// Windows closed, over the whole run.
    pub closed: u64,
}

impl DriftReport {
    /// Largest KS distance of a window with at least `min_flows` flows.
    pub fn max_ks(&self, min_flows: u64) -> Option<f64> {
        self.windows
            .iter()
            .filter(|w| w.flows >= min_flows)
            .map(|w| w.ks)
            .reduce(f64::max)
    }

    /// Largest unknown share of a window with at least `min_flows` flows.
    pub fn max_unknown_share(&self, min_flows: u64) -> Option<f64> {
        self.windows
            .iter()
            .filter(|w| w.flows >= min_flows)
            .map(WindowDrift::unknown_share)
            .reduce(f64::max)
    }
}

/// The two-sample Kolmogorov–Smirnov statistic: the largest gap between the empirical
/// distribution functions of two sorted samples (0 when either is empty).
pub fn ks_statistic(a: &[f32], b: &[f32]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

#[derive(Debug)]
struct Window {
    index: Option<i64>,
    sample: Vec<f32>,
    flows: u64,
    unknown: u64,
}

/// splitmix64: the reservoir's seeded draws, so a run's report is reproducible.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Watches verdicts window by window.
#[derive(Debug)]
pub struct DriftMonitor {
    cfg: DriftConfig,
    reference: Vec<f32>,
    current: Option<Window>,
    rng: u64,
    report: DriftReport,
}

impl DriftMonitor {
    /// Monitors against `reference` (the calibration rows' benign distances; non-finite ones
    /// dropped). A window length that is not a positive number of seconds falls back to the
    /// default.
    pub fn new(mut reference: Vec<f32>, mut cfg: DriftConfig) -> Self {
        reference.retain(|d| d.is_finite());
        reference.sort_by(f32::total_cmp);
        if !(cfg.window_s.is_finite() && cfg.window_s > 0.0) {
            cfg.window_s = DriftConfig::default().window_s;
        }
        DriftMonitor {
            cfg,
            reference,
            current: None,
            rng: 0x6d65_7461_6964_7321,
            report: DriftReport::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DriftConfig {
        &self.cfg
    }

    /// Records one flow: its start time, its benign distance and whether it was called unknown.
    /// Returns the window it closed, if its time falls in a later window than the current one
    /// (flows of an earlier window are counted in the current one).
    pub fn observe(
        &mut self,
        start_us: Option<i64>,
        benign_distance: f32,
        unknown: bool,
    ) -> Option<WindowDrift> {
        let index = start_us.map(|t| (t as f64 / (self.cfg.window_s * 1e6)).floor() as i64);
        // A timed flow of a later window (or the first timed flow after untimed ones) closes the
        // current window.
        let later = matches!(
            (&self.current, index),
            (Some(w), Some(i)) if w.index.is_none_or(|c| i > c)
        );
        let closed = if later { self.close() } else { None };
        let DriftMonitor {
            current, rng, cfg, ..
        } = self;
        let w = current.get_or_insert_with(|| Window {
            index,
            sample: Vec::new(),
            flows: 0,
            unknown: 0,
        });
        w.flows += 1;
        w.unknown += u64::from(unknown);
        if benign_distance.is_finite() {
            if w.sample.len() < cfg.max_samples.max(1) {
                w.sample.push(benign_distance);
            } else {
                // Reservoir sampling over the window's flows.
                let r = (splitmix64(rng) % w.flows) as usize;
                if let Some(slot) = w.sample.get_mut(r) {
                    *slot = benign_distance;
                }
            }
        }
        closed
    }

    /// Closes the current window (at the end of a run), returning it.
    pub fn close(&mut self) -> Option<WindowDrift> {
        let mut w = self.current.take()?;
        w.sample.sort_by(f32::total_cmp);
        let ks = ks_statistic(&w.sample, &self.reference);
        let mut d = WindowDrift {
            start_us: w.index.map(|i| (i as f64 * self.cfg.window_s * 1e6) as i64),
            flows: w.flows,
            unknown: w.unknown,
            ks,
            warned: false,
        };
        d.warned = d.flows >= self.cfg.min_flows
            && (d.ks > self.cfg.ks_bound || d.unknown_share() > self.cfg.unknown_bound);
        self.report.closed += 1;
        self.report.warnings += u64::from(d.warned);
        self.report.windows.push(d.clone());
        if self.report.windows.len() > self.cfg.max_windows.max(1) {
            let excess = self.report.windows.len() - self.cfg.max_windows.max(1);
            self.report.windows.drain(..excess);
        }
        Some(d)
    }

    /// Compares later windows against `reference` (a new site profile or model): the open window,
    /// measured against the old reference, is closed and returned first.
    pub fn set_reference(&mut self, mut reference: Vec<f32>) -> Option<WindowDrift> {
        let closed = self.close();
        reference.retain(|d| d.is_finite());
        reference.sort_by(f32::total_cmp);
        self.reference = reference;
        closed
    }

    /// The report so far.
    pub fn report(&self) -> &DriftReport {
        &self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_statistic_known_values() {
        let a = [1.0f32, 2.0, 3.0, 4.0];
        assert_eq!(ks_statistic(&a, &a), 0.0);
        assert_eq!(ks_statistic(&a, &[10.0, 11.0]), 1.0);
        // F_a(2) = 0.5, F_b(2) = 0.0 with b = {2.5, 3.5}: the gap peaks at 0.5.
        assert!((ks_statistic(&a, &[2.5, 3.5]) - 0.5).abs() < 1e-12);
        assert_eq!(ks_statistic(&[], &a), 0.0);
    }

    fn reference() -> Vec<f32> {
        (0..1000).map(|i| i as f32 / 1000.0).collect()
    }

    #[test]
    fn the_same_traffic_does_not_warn_and_moved_traffic_does() {
        let cfg = DriftConfig::default();
        let mut m = DriftMonitor::new(reference(), cfg);
        let window_us = 300_000_000i64;
        // Window 0: distances like the reference's; window 1: shifted by 0.5; window 2: 10%
        // unknown verdicts.
        let mut closed = Vec::new();
        for w in 0..3i64 {
            for i in 0..1000i64 {
                let base = (i as f32 * 7.0 % 1000.0) / 1000.0;
                let d = if w == 1 { base + 0.5 } else { base };
                let unknown = w == 2 && i % 10 == 0;
                closed.extend(m.observe(Some(w * window_us + i * 1000), d, unknown));
            }
        }
        closed.extend(m.close());
        assert_eq!(closed.len(), 3);
        assert!(!closed[0].warned && closed[0].ks < 0.05, "{:?}", closed[0]);
        assert!(closed[1].warned && closed[1].ks > 0.4, "{:?}", closed[1]);
        assert!(closed[2].warned && closed[2].ks < 0.05, "{:?}", closed[2]);
        assert_eq!(m.report().warnings, 2);
        assert_eq!(closed[1].start_us, Some(window_us));
        assert!(closed[1].describe(&cfg).contains("KS distance"));
    }

    #[test]
    fn a_new_reference_closes_the_open_window_and_measures_later_ones() {
        let mut m = DriftMonitor::new(reference(), DriftConfig::default());
        let shifted = |i: i64| (i as f32 * 7.0 % 1000.0) / 1000.0 + 0.5;
        for i in 0..500i64 {
            m.observe(Some(i * 1000), shifted(i), false);
        }
        // Against the old reference the open window has moved; a reference shifted the same way
        // (a new site profile) sees the next window as unmoved.
        let closed = m
            .set_reference(reference().iter().map(|d| d + 0.5).collect())
            .expect("the open window");
        assert!(closed.ks > 0.4, "{closed:?}");
        for i in 0..500i64 {
            m.observe(Some(i * 1000), shifted(i), false);
        }
        let next = m.close().expect("window");
        assert!(next.ks < 0.1, "{next:?}");
        assert_eq!(m.report().closed, 2);
        assert!(m.set_reference(reference()).is_none(), "no open window");
    }

    #[test]
    fn memory_is_bounded_and_small_windows_do_not_warn() {
        let cfg = DriftConfig {
            max_samples: 100,
            max_windows: 3,
            ..DriftConfig::default()
        };
        let mut m = DriftMonitor::new(reference(), cfg);
        for i in 0..20_000i64 {
            m.observe(Some(i * 1_000_000), 5.0, false);
            if let Some(w) = &m.current {
                assert!(w.sample.len() <= 100);
            }
        }
        m.close();
        assert!(m.report().windows.len() <= 3);
        assert_eq!(m.report().closed, 67);
        // A window of 50 flows far from the reference does not warn: too few flows.
        let mut m = DriftMonitor::new(reference(), DriftConfig::default());
        for i in 0..50 {
            m.observe(Some(i), 9.0, true);
        }
        let w = m.close().expect("window");
        assert!(!w.warned && w.ks == 1.0);
        // Flows without time share one window.
        let mut m = DriftMonitor::new(reference(), DriftConfig::default());
        for _ in 0..10 {
            assert!(m.observe(None, 0.5, false).is_none());
        }
        assert_eq!(m.close().expect("w").flows, 10);
    }
}
