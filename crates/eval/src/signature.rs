//! A signature detector as a baseline: each row flagged or not by fixed rules, decided before
//! the benchmark runs (for web-request payloads, libinjection's SQLi and XSS signatures on the
//! payload text, `metaids_http::signature`). It takes no training and no support rows: the same
//! rows are flagged in every task, so it has one operating point, its own, and cannot tell
//! families apart. This crate reads no text; the caller hands in one decision per frame row.

use metaids_core::episode::DetectionTask;

use crate::method::{scored_rows, Detection, EvalContext, EvalError, FewShotMethod};

/// Fixed per-row decisions as a [`FewShotMethod`].
#[derive(Debug, Clone)]
pub struct SignatureBaseline {
    name: String,
    description: String,
    flags: Vec<bool>,
}

impl SignatureBaseline {
    /// A baseline named `name` that flags row `r` of the frame when `flags[r]`.
    pub fn new(name: &str, description: &str, flags: Vec<bool>) -> Self {
        SignatureBaseline {
            name: name.into(),
            description: description.into(),
            flags,
        }
    }
}

impl FewShotMethod for SignatureBaseline {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    fn prepare(&mut self, ctx: &EvalContext<'_>, _query_rows: &[usize]) -> Result<(), EvalError> {
        if self.flags.len() != ctx.frame.len() {
            return Err(EvalError::Method {
                method: self.name.clone(),
                message: format!(
                    "{} decisions for a frame of {} rows",
                    self.flags.len(),
                    ctx.frame.len()
                ),
            });
        }
        Ok(())
    }

    fn detect(&self, ctx: &EvalContext<'_>, task: &DetectionTask) -> Detection {
        let flagged: Vec<bool> = scored_rows(ctx, task).map(|r| self.flags[r]).collect();
        Detection {
            scores: flagged.iter().map(|&f| if f { 1.0 } else { 0.0 }).collect(),
            flagged,
            calibration: Vec::new(),
        }
    }
}
