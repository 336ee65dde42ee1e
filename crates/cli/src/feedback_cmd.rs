//! `metaids feedback`: an analyst's verdict on one alert becomes a new support example (`--confirm`)
//! or a negative example (`--reject`) of its threat, as a new threat-library version.
//!
//! It reads the alert from the EVE file `metaids detect` wrote (the alert carries the flow's embedding
//! under `metaids.embedding`); the refit and its guard are the library's.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};

use anyhow::{bail, Context, Result};
use metaids_detect::EveEvent;
use metaids_library::{EnrolOptions, SupportFlow, ThreatLibrary};

use crate::args::FeedbackArgs;

/// Longest EVE line read (alerts with a 32–64-d embedding are a few kB).
const MAX_LINE: usize = 1 << 20;

/// Finds the alert `id` in the EVE file at `path`; returns it with its line number.
fn find_alert(path: &std::path::Path, id: &str) -> Result<(EveEvent, usize)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut n = 0usize;
    loop {
        line.clear();
        n += 1;
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("{}: line {n}", path.display()))?;
        if read == 0 {
            bail!(
                "{}: no alert with metaids.alert_id {id:?} (alert ids look like <run id>-<sequence>)",
                path.display()
            );
        }
        if line.len() > MAX_LINE {
            bail!(
                "{}: line {n} is longer than {MAX_LINE} bytes",
                path.display()
            );
        }
        // Cheap pre-filter before parsing: the id must appear on the line.
        if !line.windows(id.len()).any(|w| w == id.as_bytes()) {
            continue;
        }
        let event: EveEvent = serde_json::from_slice(&line).with_context(|| {
            format!(
                "{}: line {n} is not a metaids EVE record (expected the fields metaids detect writes)",
                path.display()
            )
        })?;
        if event.metaids.alert_id.as_deref() == Some(id) {
            return Ok((event, n));
        }
    }
}

/// Runs the command.
pub fn run(a: FeedbackArgs) -> Result<()> {
    let model = metaids_model::load(&a.model)
        .with_context(|| format!("cannot load model {}", a.model.display()))?;
    let library = ThreatLibrary::open(&a.library, &model)
        .with_context(|| format!("cannot open threat library {}", a.library.display()))?;
    let (event, line) = find_alert(&a.alerts, &a.alert)?;
    if event.event_type != "alert" {
        bail!(
            "{}: line {line} ({}) is a {:?} record, not an alert",
            a.alerts.display(),
            a.alert,
            event.event_type
        );
    }
    let info = &event.metaids;
    if info.embedding.len() != model.dim() {
        bail!(
            "{}: alert {} carries a {}-value embedding; the model {} embeds into {} values (was the alert written with another model?)",
            a.alerts.display(),
            a.alert,
            info.embedding.len(),
            a.model.display(),
            model.dim()
        );
    }
    // Alerts name the model by a prefix of its weights' sha256 (the library's model identity).
    let identity = &library.identity().model;
    if !info.model.is_empty() && !identity.starts_with(&info.model) {
        bail!(
            "{}: alert {} was raised by model {}, but the library {} belongs to model {}: its embedding does not fit this library",
            a.alerts.display(),
            a.alert,
            info.model,
            a.library.display(),
            identity
        );
    }
    // Alerts name their library; an alert of another library of the same model would move a
    // threat that never raised it. (Alerts of older builds carry no library id.)
    if !info.library.is_empty() && info.library != library.id() {
        bail!(
            "{}: alert {} was raised with threat library {} (version {}), but {} is library {}: feedback goes to the library that raised the alert",
            a.alerts.display(),
            a.alert,
            info.library,
            info.library_version,
            a.library.display(),
            library.id()
        );
    }
    let threat = match (&a.threat, &info.threat, info.verdict.name()) {
        (Some(t), _, _) => t.clone(),
        (None, Some(t), "threat") => t.clone(),
        (None, _, verdict) => bail!(
            "alert {} is an {verdict} verdict with no threat of its own: name the threat it belongs to with --threat NAME",
            a.alert
        ),
    };
    let flow = SupportFlow {
        source: a.alerts.display().to_string(),
        locator: format!(
            "alert {} (line {line}, flow {} {}:{} → {}:{} {}, {})",
            a.alert,
            event.flow_id,
            event.src_ip,
            event.src_port,
            event.dest_ip,
            event.dest_port,
            event.proto,
            event.timestamp
        ),
        embedding: info.embedding.clone(),
        // An alert carries the flow's embedding, not its feature values.
        values: metaids_decide::FlowValues::default(),
    };
    if a.confirm {
        let current = library.current()?;
        if let Some(t) = current.threats.iter().position(|t| t.name == threat) {
            if let Some(why) = metaids_decide::confirmation_doubt(
                &model.reference,
                &current.threats,
                t,
                &flow.embedding,
            ) {
                if !a.force {
                    bail!(
                        "alert {} does not look like threat {threat:?}: {why}. Confirming it would pull the threat towards other traffic; name the right threat with --threat, reject the alert, or pass --force",
                        a.alert
                    );
                }
                eprintln!("warning: {why}; confirmed anyway (--force)");
            }
        }
    }
    let author = crate::who(a.author.as_deref());
    let options = EnrolOptions {
        force: a.force,
        budget: None,
    };
    let result = if a.confirm {
        library.add_support(&model, &threat, vec![flow], &author, options)
    } else {
        library.add_negative(&model, &threat, vec![flow], &author, options)
    };
    let enrolment = match result {
        // Feedback is idempotent: the same verdict twice changes nothing and is not an error.
        Err(e @ metaids_library::LibraryError::AlreadyRecorded { .. }) => {
            println!("{e}");
            return Ok(());
        }
        other => {
            other.with_context(|| format!("feedback on alert {} for threat {threat:?}", a.alert))?
        }
    };
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
