//! `metaids feedback`: an analyst's verdict on one alert becomes a new support example (`--confirm`)
//! or a negative example (`--reject`) of its threat, as a new threat-library version.
//!
//! It reads the alert from the EVE file `metaids detect` wrote (the alert carries the flow's embedding
//! under `metaids.embedding`); the checks and the refit are `metaids_detect::feedback`'s, shared
//! with the service's `POST /api/v1/feedback`.

use anyhow::{Context, Result};
use metaids_detect::{apply_feedback, find_alert, FeedbackOutcome, Judgement};
use metaids_library::ThreatLibrary;

use crate::args::FeedbackArgs;

/// Runs the command.
pub fn run(a: FeedbackArgs) -> Result<()> {
    let model = metaids_model::load(&a.model)
        .with_context(|| format!("cannot load model {}", a.model.display()))?;
    let library = ThreatLibrary::open(&a.library, &model)
        .with_context(|| format!("cannot open threat library {}", a.library.display()))?;
    let alert = find_alert(&a.alerts, &a.alert)?;
    let judgement = if a.confirm {
        Judgement::Confirm
    } else {
        Judgement::Reject
    };
    let author = crate::who(a.author.as_deref());
    let outcome = apply_feedback(
        &library,
        &model,
        &alert,
        judgement,
        a.threat.as_deref(),
        a.force,
        &author,
    )
    .with_context(|| format!("feedback on alert {}", a.alert))?;
    let (enrolment, doubt) = match outcome {
        // Feedback is idempotent: the same verdict twice changes nothing and is not an error.
        FeedbackOutcome::AlreadyRecorded(what) => {
            println!("{what}");
            return Ok(());
        }
        FeedbackOutcome::Applied {
            enrolment,
            forced_doubt,
        } => (enrolment, forced_doubt),
    };
    if let Some(why) = doubt {
        eprintln!("warning: {why}; confirmed anyway (--force)");
    }
    let t = &enrolment.threat;
    println!(
        "{} alert {} for threat {:?}: library version {} ({} support, {} negative examples, threshold {:.4})",
        if a.confirm { "confirmed" } else { "rejected" },
        a.alert,
        t.name,
        enrolment.version,
        t.support.len(),
        t.negatives.len(),
        t.threshold
    );
    println!("{}", t.report.summary());
    Ok(())
}
