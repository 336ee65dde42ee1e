//! Progress of long commands: indicatif's bar when stderr is a terminal; otherwise (CI logs, pipes,
//! services) a plain status line every [`STATUS_EVERY`], so a long run is never silent. It does
//! nothing else.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a status line is printed where there is no terminal.
pub const STATUS_EVERY: Duration = Duration::from_secs(10);

/// A bar, or periodic status lines.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
    /// `(label, start, last line)` when printing plain lines.
    plain: Option<Arc<Mutex<(String, Instant, Instant)>>>,
}

impl Progress {
    /// Progress over `total` units, drawn with `template` on a terminal; `label` starts each plain
    /// status line. `quiet` shows nothing.
    pub fn new(quiet: bool, total: u64, template: &str, label: &str) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = if quiet || !terminal {
            let b = ProgressBar::hidden();
            b.set_length(total);
            b
        } else {
            ProgressBar::new(total)
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let now = Instant::now();
        // The first update prints a line at once, then one every STATUS_EVERY.
        let first = now.checked_sub(STATUS_EVERY).unwrap_or(now);
        let plain =
            (!quiet && !terminal).then(|| Arc::new(Mutex::new((label.to_string(), now, first))));
        Progress { bar, plain }
    }

    fn status(&self) {
        let Some(plain) = &self.plain else {
            return;
        };
        let Ok(mut state) = plain.lock() else {
            return;
        };
        if state.2.elapsed() < STATUS_EVERY {
            return;
        }
        state.2 = Instant::now();
        let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
        let pct = if len > 0 {
            format!(" ({:.0}%)", 100.0 * pos as f64 / len as f64)
        } else {
            String::new()
        };
        let msg = self.bar.message();
        eprintln!(
            "{}: {pos}/{len}{pct}{}{msg}, {:.0} s",
            state.0,
            if msg.is_empty() { "" } else { ", " },
            state.1.elapsed().as_secs_f64()
        );
    }

    /// Adds `n` units.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.status();
    }

    /// Sets the position.
    pub fn set_position(&self, p: u64) {
        self.bar.set_position(p);
        self.status();
    }

    /// Sets the message shown beside the bar (and in status lines).
    pub fn set_message(&self, m: String) {
        self.bar.set_message(m);
    }

    /// The current message.
    pub fn message(&self) -> String {
        self.bar.message()
    }

    /// Removes the bar.
    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}
