//! `metaids threat …`: the threat library's commands. Owns choosing support flows (flow-file rows by
//! label or number, capture flows by a `--select` expression), embedding them with the model and
//! printing; fitting, the enrolment guard, versions and export/import are `metaids-library`'s.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use metaids_core::episode::seeded_subsample;
use metaids_core::schema::DatasetKind;
use metaids_decide::Decider;
use metaids_flow::{for_each_flow, FlowConfig, FlowRecord, FlowSelector, FrameBuilder};
use metaids_ingest::{read_files, ReadOptions};
use metaids_library::{
    EnrolOptions, EnrolmentReport, ModelIdentity, SupportFlow, Threat, ThreatDocument, ThreatDraft,
    ThreatLibrary,
};
use metaids_model::ThreatModel;

use crate::args::{LibraryArgs, ThreatAddArgs, ThreatCommand, ThreatListArgs};
pub use crate::candidates::Candidates;

/// Most capture flows a filter may select (each is kept in memory until the support is drawn).
const MAX_CAPTURE_FLOWS: usize = 200_000;

/// Runs a `threat` subcommand.
pub fn run(c: ThreatCommand) -> Result<()> {
    match c {
        ThreatCommand::Add(a) => add(*a),
        ThreatCommand::List(a) => list(&a),
        ThreatCommand::Show(a) => {
            let lib = ThreatLibrary::open_read_only(&a.lib.library)?;
            let current = lib.current()?;
            let Some(t) = current.threat(&a.name) else {
                bail!(
                    "{}: no threat named {:?} in version {} (threats: {})",
                    a.lib.library.display(),
                    a.name,
                    current.version,
                    names(&current.threats)
                );
            };
            if a.json {
                println!("{}", serde_json::to_string_pretty(t)?);
            } else {
                show(t);
            }
            Ok(())
        }
        ThreatCommand::Remove(a) => {
            let lib = ThreatLibrary::open_without_model(&a.lib.library)?;
            let v = lib.remove(&a.name, &author(&a.lib))?;
            println!("removed {:?}: library version {v}", a.name);
            Ok(())
        }
        ThreatCommand::Export(a) => {
            let lib = ThreatLibrary::open_read_only(&a.lib.library)?;
            let n = lib.export_to_with(&a.out, a.redact)?;
            println!(
                "exported {n} threat(s) of version {} to {} (model {})",
                lib.current()?.version,
                a.out.display(),
                lib.identity().model
            );
            Ok(())
        }
        ThreatCommand::Import(a) => {
            let model = metaids_model::load(&a.model)
                .with_context(|| format!("cannot load model {}", a.model.display()))?;
            let text = std::fs::read_to_string(&a.file)
                .with_context(|| format!("cannot read {}", a.file.display()))?;
            let doc = ThreatDocument::parse(&text, &a.file)?;
            doc.validate(&a.file)?;
            let created = !a.lib.library.exists();
            let lib = if created {
                // A new library for the model: how a team receives shared threats.
                doc.check_model(&ModelIdentity::of(&model)?, &a.file, &model)?;
                let lib = ThreatLibrary::create_with(&a.lib.library, doc.model, &author(&a.lib))?;
                println!(
                    "created threat library {} for model {}",
                    a.lib.library.display(),
                    lib.identity().model
                );
                lib
            } else {
                ThreatLibrary::open(&a.lib.library, &model)?
            };
            let options = EnrolOptions {
                force: a.force,
                budget: a.budget,
            };
            let result = lib.import_json_with(
                &model,
                &text,
                &a.file,
                a.replace,
                &author(&a.lib),
                options,
                a.adopt_profile,
            );
            let s = match result {
                Ok(s) => s,
                Err(e) => {
                    if created {
                        // A failed command leaves the file system as it found it.
                        drop(lib);
                        let _ = std::fs::remove_file(&a.lib.library);
                    }
                    if let metaids_library::LibraryError::Refused { name, report } = &e {
                        print_report(report);
                        bail!(
                            "import of {}: threat {name:?} refused by the guard (refitted from its examples, it would flag {:.2}% of benign reference flows, budget {:.2}%); nothing imported. Pass --force to store it anyway",
                            a.file.display(),
                            report.fpr * 100.0,
                            report.budget * 100.0
                        );
                    }
                    return Err(e.into());
                }
            };
            println!(
                "imported {}: {} added ({}), {} replaced ({}), each refitted from its examples and guarded: library version {}",
                a.file.display(),
                s.added.len(),
                s.added.join(", "),
                s.replaced.len(),
                s.replaced.join(", "),
                s.version
            );
            if s.profile_adopted {
                println!(
                    "the document's site profile is now the library's (it had no baseline): every threat is calibrated on it"
                );
            }
            if s.profile_ignored {
                println!(
                    "the document carries a site profile; it was not taken: {}",
                    if a.adopt_profile {
                        "the library keeps its own baseline (learn a new one with `metaids baseline --update`)"
                    } else {
                        "pass --adopt-profile to take it into a library without a baseline (a profile decides what is benign: take only your own)"
                    }
                );
            }
            Ok(())
        }
        ThreatCommand::History(a) => {
            let lib = ThreatLibrary::open_read_only(&a.library)?;
            println!("| version | parent | when | who | change | threats |\n|---:|---:|---|---|---|---:|");
            for v in lib.history()? {
                println!(
                    "| {}{} | {} | {} | {} | {} | {} |",
                    v.version,
                    if v.current { " (current)" } else { "" },
                    v.parent.map_or("-".into(), |p| p.to_string()),
                    v.created_at,
                    v.author,
                    v.change,
                    v.threats.len()
                );
            }
            Ok(())
        }
        ThreatCommand::Rollback(a) => {
            let lib = ThreatLibrary::open_without_model(&a.lib.library)?;
            let v = lib.rollback(a.target, &author(&a.lib))?;
            let cur = lib.current()?;
            println!(
                "restored the threats of version {} as version {v}: {}",
                a.target,
                names(&cur.threats)
            );
            Ok(())
        }
        ThreatCommand::Publish(a) => crate::kafka_cmd::publish(a),
    }
}

fn author(a: &LibraryArgs) -> String {
    crate::who(a.author.as_deref())
}

/// Who makes a change: the `--author` given, else `$USER`, else `unknown`.
pub fn who(given: Option<&str>) -> String {
    given
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn names(threats: &[Threat]) -> String {
    if threats.is_empty() {
        return "none".into();
    }
    threats
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(a: &ThreatListArgs) -> Result<()> {
    let lib = ThreatLibrary::open_read_only(&a.lib.library)?;
    let v = lib.current()?;
    let id = lib.identity();
    if a.json {
        let threats: Vec<serde_json::Value> = v
            .threats
            .iter()
            .map(|t| {
                serde_json::json!({
                    "id": t.id,
                    "signature_id": t.signature_id,
                    "rev": t.rev(),
                    "name": t.name,
                    "description": t.description,
                    "severity": t.severity,
                    "category": t.category,
                    "prototypes": t.prototypes.len(),
                    "support": t.support.len(),
                    "negatives": t.negatives.len(),
                    "threshold": t.threshold,
                    "report": t.report,
                    "created_by": t.created_by,
                    "created_at": t.created_at,
                    "updated_at": t.updated_at,
                })
            })
            .collect();
        let out = serde_json::json!({
            "library": a.lib.library.display().to_string(),
            "library_id": lib.id(),
            "version": v.version,
            "model": id,
            "threats": threats,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} (library {}) — version {}, {} threat(s); model {} ({} data, {}-d embeddings)",
        a.lib.library.display(),
        lib.id(),
        v.version,
        v.threats.len(),
        id.model,
        id.dataset,
        id.dim
    );
    if v.threats.is_empty() {
        return Ok(());
    }
    println!("\n| id | sid | name | severity | category | prototypes | support | negatives | threshold | benign FPR | updated |\n|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---|");
    for t in &v.threats {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.4} | {:.4}{} | {} |",
            t.id,
            t.signature_id,
            t.name,
            t.severity,
            t.category,
            t.prototypes.len(),
            t.support.len(),
            t.negatives.len(),
            t.threshold,
            t.report.fpr,
            if t.report.forced { " (forced)" } else { "" },
            t.updated_at
        );
    }
    Ok(())
}

fn print_report(r: &EnrolmentReport) {
    let verdict = match (r.accepted, r.forced) {
        (true, _) => "accepted",
        (false, true) => "REFUSED, stored with --force",
        (false, false) => "REFUSED",
    };
    if let Some(f) = &r.site_forest {
        // The library names threats with the site forest: its guard decides.
        println!(
            "guard (site forest): {} — {verdict}{}",
            f.describe(),
            if r.accepted {
                String::new()
            } else {
                format!(": {}", metaids_decide::threat::FOREST_REFUSAL)
            }
        );
        println!(
            "  the embedding's rule, for reference: flags {} of {} benign reference flows (FPR {:.4}, budget {})",
            r.would_flag,
            r.benign_reference_rows,
            r.fpr,
            metaids_decide::threat::shown_rate(r.budget)
        );
    } else {
        println!(
            "guard: flags {} of {} benign reference flows (FPR {:.4}, budget {}) — {verdict}",
            r.would_flag,
            r.benign_reference_rows,
            r.fpr,
            metaids_decide::threat::shown_rate(r.budget),
        );
    }
    println!(
        "  threshold {:.4} (calibrated at the budget: {:.4}); {} prototype(s); flags {} of {} support flows; {} negative(s)",
        r.threshold, r.calibrated_threshold, r.prototypes, r.support_flagged, r.support, r.negatives
    );
    println!("  weakest support flows: {}", r.weakest.join("; "));
}

fn show(t: &Threat) {
    println!("{} (id {}, signature {})", t.name, t.id, t.signature_id);
    println!("  severity {}, category {}", t.severity, t.category);
    if !t.description.is_empty() {
        println!("  {}", t.description);
    }
    println!(
        "  created by {} at {}, updated {}",
        t.created_by, t.created_at, t.updated_at
    );
    for (i, p) in t.prototypes.iter().enumerate() {
        let norm = p.iter().map(|v| v * v).sum::<f32>().sqrt();
        let head: Vec<String> = p.iter().take(4).map(|v| format!("{v:.3}")).collect();
        println!(
            "  prototype {i}: {} values, norm {norm:.3}, [{}, …]",
            p.len(),
            head.join(", ")
        );
    }
    println!("  threshold {:.4}", t.threshold);
    println!("  support ({}):", t.support.len());
    for f in &t.support {
        println!("    {} {}", f.source, f.locator);
    }
    if !t.negatives.is_empty() {
        println!("  negatives ({}):", t.negatives.len());
        for f in &t.negatives {
            println!("    {} {}", f.source, f.locator);
        }
    }
    print_report(&t.report);
}

/// Parses `3,7,10-12` into sorted, distinct 1-based row numbers.
pub fn parse_rows(spec: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| -> Result<usize> {
            match s.trim().parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => bail!("--rows: {part:?} is not a row number (1 = first data row) or a range like 10-12"),
            }
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if b < a || b - a > 1_000_000 {
                    bail!("--rows: range {part:?} is empty or too long");
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    if out.is_empty() {
        bail!("--rows: no row numbers in {spec:?}");
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn from_flow_file(path: &Path, a: &ThreatAddArgs, model: &ThreatModel) -> Result<Candidates> {
    let frame = if model.normaliser.kind == DatasetKind::HttpRequests {
        crate::http_frame(&[path.to_path_buf()])
            .context("reading payloads for a web-request model (family,source,payload)")?
            .0
    } else {
        let opts = ReadOptions {
            dataset: Some(model.normaliser.kind),
            ..ReadOptions::default()
        };
        read_files(&[path.to_path_buf()], &opts)
            .with_context(|| {
                format!(
                    "reading flows for the model's dataset ({})",
                    model.normaliser.kind
                )
            })?
            .0
    };
    model.check_layout(&frame.layout)?;
    let mut rows: Vec<usize> = (0..frame.len()).collect();
    if let Some(spec) = &a.rows {
        let wanted = parse_rows(spec)?;
        if let Some(&last) = wanted.last().filter(|&&l| l > frame.len()) {
            bail!(
                "--rows: {} has {} data rows, row {last} asked for",
                path.display(),
                frame.len()
            );
        }
        rows = wanted.into_iter().map(|n| n - 1).collect();
    }
    if let Some(label) = &a.label {
        rows.retain(|&r| frame.label(r) == label);
        if rows.is_empty() {
            let labels: Vec<String> = frame
                .family_counts()
                .into_iter()
                .map(|(k, n)| format!("{k} ({n})"))
                .collect();
            bail!(
                "{}: no selected row is labelled {label:?}; labels: {}",
                path.display(),
                labels.join(", ")
            );
        }
    }
    let source = path.display().to_string();
    let locators = (0..frame.len())
        .map(|r| {
            (
                source.clone(),
                format!("row {} (line {})", r + 1, frame.sources[r].line),
            )
        })
        .collect();
    Ok(Candidates {
        frame,
        rows,
        locators,
    })
}

/// The flows of captures (those matching the flow filter `select`), as candidate support flows.
pub fn from_capture(
    paths: &[PathBuf],
    select: Option<&str>,
    config: FlowConfig,
    model: &ThreatModel,
) -> Result<Candidates> {
    let c = capture_flows(paths, select, config, model)?;
    if c.locators.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "{}: no flow matches --select {:?}",
            names.join(", "),
            select.unwrap_or("")
        );
    }
    Ok(c)
}

/// The flows of captures `paths` (plain or `.gz`) that `select` selects, as candidates (possibly
/// none).
pub fn capture_flows(
    paths: &[PathBuf],
    select: Option<&str>,
    config: FlowConfig,
    model: &ThreatModel,
) -> Result<Candidates> {
    if model.normaliser.kind != DatasetKind::Cic {
        bail!(
            "--pcap gives CICFlowMeter flows, but the model was trained on {} data: use a model trained on CIC-format flows, or --flows",
            model.normaliser.kind
        );
    }
    let selector = FlowSelector::parse(select.unwrap_or(""))?;
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    // Flows become frame rows in memory, with the values a CSV round trip would give.
    // With identifiers: the baseline's per-source cap groups by `Src IP`.
    let mut rows = FrameBuilder::with_identifiers(&names.join(", "));
    let mut locators = Vec::new();
    for (path, name) in paths.iter().zip(&names) {
        let mut source = crate::extract::open_capture(path, config)?;
        let report = for_each_flow(&mut source, |flow: FlowRecord| -> Result<()> {
            if selector.matches(&flow) {
                if locators.len() >= MAX_CAPTURE_FLOWS {
                    bail!("{name}: more than {MAX_CAPTURE_FLOWS} flows match; narrow --select");
                }
                locators.push((
                    name.clone(),
                    format!("flow {} at {}", flow.flow_id(), flow.timestamp()),
                ));
                rows.push(&flow);
            }
            Ok(())
        })?;
        for w in report.warnings() {
            eprintln!("warning: {name}: {w}");
        }
    }
    let frame = rows.take();
    model.check_layout(&frame.layout)?;
    Ok(Candidates {
        rows: (0..frame.len()).collect(),
        frame,
        locators,
    })
}

/// Warns when existing threats already flag the new support flows: the new threat would be a twin
/// that never fires (the older one wins ties and usually the margin), so the user hears which.
fn warn_twins(
    reference: metaids_decide::BenignReference,
    existing: &[Threat],
    support: &[SupportFlow],
) -> Result<()> {
    if existing.is_empty() {
        return Ok(());
    }
    let decider = Decider::new(reference, existing.to_vec(), f32::INFINITY)
        .context("arming the library's threats")?;
    let mut flagged = vec![0usize; existing.len()];
    for f in support {
        if let Some(t) = decider.decide(&f.embedding).flagged() {
            flagged[t] += 1;
        }
    }
    for (t, n) in existing.iter().zip(flagged) {
        if n > 0 {
            eprintln!(
                "warning: {n} of the {} support flows are already flagged by threat {:?} (id {}): \
                 the new threat may be a twin of it that seldom fires; check `metaids threat show --library … {:?}`",
                support.len(),
                t.name,
                t.id,
                t.name
            );
        }
    }
    Ok(())
}

/// Support flows for `rows` of `c` ([`metaids_library::support_flows`]).
pub(crate) fn support_flows(
    model: &ThreatModel,
    normaliser: &metaids_core::preprocess::Normaliser,
    c: &Candidates,
    rows: &[usize],
) -> Result<Vec<SupportFlow>> {
    Ok(metaids_library::support_flows(
        model,
        normaliser,
        &c.frame,
        rows,
        &c.locators,
    )?)
}

fn add(a: ThreatAddArgs) -> Result<()> {
    if a.enrol_shots == 0 {
        bail!("--enrol-shots must be at least 1");
    }
    if a.flows.is_some() && a.label.is_none() && a.rows.is_none() {
        bail!(
            "--flows needs --label NAME or --rows 3,7,10-12 to say which flows are the threat: \
             enrolling random rows of a file would enrol whatever they are"
        );
    }
    let model = metaids_model::load(&a.model)?;
    let web = crate::web::is_web_model(&a.model, &model, &a.requests)?;
    if web && a.select.is_some() {
        bail!("--select chooses capture flows; a web-request model enrols the captures' HTTP requests (give captures of the attack only)");
    }
    let lib = if a.lib.library.exists() {
        Some(ThreatLibrary::open(&a.lib.library, &model)?)
    } else if a.dry_run {
        bail!(
            "{} does not exist (a dry run creates nothing)",
            a.lib.library.display()
        );
    } else {
        None
    };
    // Embedded as the library's flows are: under its site profile's adaptation, if any.
    let (reference, adaptation) = match &lib {
        Some(l) => {
            let (r, p) = l.reference(&model)?;
            (r, p.and_then(|p| p.adaptation))
        }
        None => (model.reference.clone(), None),
    };
    let normaliser = model.site_normaliser(adaptation.as_ref())?;
    let c = match (&a.flows, a.pcap.is_empty()) {
        (Some(f), _) => from_flow_file(f, &a, &model)?,
        (None, _) if web => {
            crate::web::candidates(&a.pcap, &a.requests, &model, &normaliser, &reference)?
        }
        (None, false) => from_capture(
            &a.pcap,
            a.select.as_deref(),
            crate::extract::flow_config(&a.flow)?,
            &model,
        )?,
        (None, true) => bail!("give --flows FILE or --pcap FILE…"),
    };
    let chosen = seeded_subsample(&c.rows, a.enrol_shots, a.seed);
    let unit = if web && a.flows.is_none() {
        "requests"
    } else {
        "flows"
    };
    if chosen.len() < c.rows.len() {
        println!(
            "took {} of {} selected {unit} (seed {}):",
            chosen.len(),
            c.rows.len(),
            a.seed
        );
    } else {
        println!("using all {} selected {unit}:", chosen.len());
    }
    for &r in &chosen {
        println!("  {} {}", c.locators[r].0, c.locators[r].1);
    }
    let support = support_flows(&model, &normaliser, &c, &chosen)?;
    let draft = ThreatDraft {
        name: a.name.clone(),
        description: a.description.clone(),
        severity: a.severity,
        category: a.category.clone(),
        support,
        author: author(&a.lib),
    };
    let options = EnrolOptions {
        force: a.force,
        budget: a.budget,
    };
    let lib = if let Some(lib) = lib {
        lib
    } else {
        let lib = ThreatLibrary::create_with(
            &a.lib.library,
            ModelIdentity::of(&model)?,
            &author(&a.lib),
        )?;
        println!(
            "created threat library {} for model {}",
            a.lib.library.display(),
            lib.identity().model
        );
        lib
    };
    warn_twins(reference, &lib.current()?.threats, &draft.support)?;
    if a.dry_run {
        let t = lib.preview(&model, &draft, options)?;
        print_report(&t.report);
        println!("dry run: nothing stored");
        return Ok(());
    }
    match lib.add(&model, &draft, options) {
        Ok(e) => {
            print_report(&e.threat.report);
            println!(
                "enrolled {:?} as threat {} (signature {}): library version {}",
                e.threat.name, e.threat.id, e.threat.signature_id, e.version
            );
            Ok(())
        }
        Err(metaids_library::LibraryError::Refused { report, .. }) => {
            print_report(&report);
            bail!(
                "enrolment of {:?} refused: flagging its support would flag {:.2}% of benign reference flows (budget {:.2}%). \
                 Check the support flows (the weakest are listed above: mislabelled or benign?), choose others, or pass --force",
                a.name,
                report.fpr * 100.0,
                report.budget * 100.0
            )
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_and_errors() {
        assert_eq!(
            parse_rows("3,7,10-12,7").expect("ok"),
            vec![3, 7, 10, 11, 12]
        );
        assert!(parse_rows("0").is_err());
        assert!(parse_rows("x").is_err());
        assert!(parse_rows("5-2").is_err());
        assert!(parse_rows("").is_err());
    }
}
