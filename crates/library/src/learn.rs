//! Learning a site profile from the site's benign flows: the feature adaptation (the model's numeric
//! columns standardised on the kept flows), the flows' embeddings under it, the check that the
//! window is not attack traffic, and the decision core's [`SiteProfile::learn`]. One implementation
//! for `metaids baseline` and the service's `POST /api/v1/baseline`; storing the profile is
//! [`ThreatLibrary::baseline`].

use std::time::Instant;

use metaids_core::context::SourceContext;
use metaids_core::FlowFrame;
use metaids_decide::{Decider, ProfileOptions, SiteProfile, ThreatRule, VerdictKind};
use metaids_model::{ScoringKernel, ThreatModel};

use crate::{LibraryError, Result, ThreatLibrary};

/// Share of the window the library's threats may flag before it looks like attack traffic rather
/// than the site's benign traffic (refused unless forced).
pub const ATTACK_WINDOW: f64 = 0.5;

/// How to learn a profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnOptions {
    /// The profile's budget, per-source cap, prototype share, seed, force.
    pub profile: ProfileOptions,
    /// Standardise the model's numeric columns on the kept flows (the site adaptation).
    pub adapt: bool,
    /// Replace a baseline the library has already (else that is an error).
    pub update: bool,
    /// Learn even from a window the threats mostly flag.
    pub force: bool,
    /// How threats are named on the site: in the embedding, or by the site forest (whose rows the
    /// profile then keeps). Flow models only.
    pub threat_rule: ThreatRule,
    /// With the forest rule: the forest also reads each flow's source context.
    pub source_context: bool,
}

/// A learnt profile, not yet stored.
#[derive(Debug, Clone)]
pub struct LearntProfile {
    /// The profile (its `adaptation` set when [`LearnOptions::adapt`]).
    pub profile: SiteProfile,
    /// The rows' embeddings under the profile's adaptation, row-major.
    pub embeddings: Vec<f32>,
    /// Seconds spent embedding.
    pub embed_seconds: f64,
    /// Flows the library's threats flagged as they decide now (before the profile), of all rows.
    pub flagged_before: usize,
    /// With the forest rule: every row's decision row (its preprocessed values, then its source
    /// context when the forest reads it), row-major in the rows' order, and its width; empty
    /// with the prototype rule.
    pub forest_rows: (Vec<f32>, usize),
}

/// Each row's source address (`Src IP`; `unknown` when the layout has none): what the baseline's
/// per-source cap groups by.
pub fn source_addresses(frame: &FlowFrame, rows: &[usize]) -> Vec<String> {
    rows.iter()
        .map(|&r| {
            identifier(&frame.identifiers(r), "Src IP")
                .map_or_else(|| "unknown".to_string(), str::to_string)
        })
        .collect()
}

/// The value of the identifier `name` among a row's identifiers (names compared without case).
fn identifier<'a>(ids: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    ids.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// The source context (`metaids_core::context`) of rows `rows` of `frame`, counted over those rows
/// in order (a capture's flows in the order its flow engine produced them, a flow file's in file
/// order), from their `Src IP` and `Timestamp` identifiers and their `Dst Port` column: row-major,
/// three values per row. A row without a source address counts as its own source.
pub fn source_context(frame: &FlowFrame, rows: &[usize]) -> Vec<f32> {
    let mut c = SourceContext::new(CONTEXT_SOURCES);
    let mut out = Vec::with_capacity(rows.len() * metaids_core::context::CONTEXT_WIDTH);
    // The destination port is a categorical feature of the CIC layout, not an identifier.
    let port_column = frame
        .layout
        .categorical
        .iter()
        .position(|n| n.eq_ignore_ascii_case("Dst Port"));
    for &r in rows {
        let ids = frame.identifiers(r);
        let source = match identifier(&ids, "Src IP") {
            Some(ip) => SourceContext::key(ip),
            None => SourceContext::key(&("row", r)),
        };
        let start = identifier(&ids, "Timestamp")
            .and_then(metaids_core::time::parse_timestamp_us)
            .unwrap_or(0);
        let port = port_column
            .and_then(|j| frame.categorical_row(r).nth(j))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        out.extend(c.push_key(source, start, port));
    }
    out
}

/// Sources the source context tracks at once (the one seen longest ago is forgotten first).
pub const CONTEXT_SOURCES: usize = 65_536;

/// Learns a site profile from rows `rows` of `frame`, whose source addresses are `sources` (what
/// the per-source cap groups by), for the library `library` (`None`: a library yet to be created).
/// Refuses a library that has a baseline unless `update`, and a window the library's threats
/// mostly flag ([`ATTACK_WINDOW`]) unless `force`.
pub fn learn_site_profile(
    model: &ThreatModel,
    library: Option<&ThreatLibrary>,
    frame: &FlowFrame,
    rows: &[usize],
    sources: &[String],
    options: LearnOptions,
) -> Result<LearntProfile> {
    if rows.is_empty() {
        return Err(LibraryError::Invalid {
            field: "flows".into(),
            message: "no flows to learn from: a baseline needs the site's benign traffic".into(),
        });
    }
    if sources.len() != rows.len() {
        return Err(LibraryError::Invalid {
            field: "sources".into(),
            message: format!("{} sources for {} rows", sources.len(), rows.len()),
        });
    }
    model.check_layout(&frame.layout)?;
    // The library's current version, read once (the baseline check and the attack-window check).
    let current = library.map(ThreatLibrary::current).transpose()?;
    if let (Some(lib), Some(current)) = (library, &current) {
        if let (Some(site), false) = (&current.site, options.update) {
            return Err(LibraryError::BaselineExists {
                path: lib.path().to_path_buf(),
                profile: site.profile,
                flows_kept: site.flows_kept,
                budget: site.budget,
            });
        }
    }
    // The site adaptation: the numeric columns refit on the flows the per-source cap keeps (the
    // same flows the profile is learnt from).
    let adaptation = options.adapt.then(|| {
        let kept = metaids_decide::kept_flows(sources, options.profile);
        let kept_rows: Vec<&[f32]> = kept.iter().map(|&k| frame.numeric_row(rows[k])).collect();
        model.refit_on(kept_rows.iter().copied())
    });
    let started = Instant::now();
    // The scoring kernel (equal to candle within 1e-4 per row) embeds at detection speed.
    let kernel = ScoringKernel::for_model(model)?;
    let normaliser = model.site_normaliser(adaptation.as_ref())?;
    let x = normaliser
        .transform(frame, rows)
        .map_err(|e| LibraryError::Model(Box::new(e.into())))?;
    let embeddings = kernel.embed(&x)?;
    let embed_seconds = started.elapsed().as_secs_f64();
    let dim = model.dim();

    // Attack-only or attack-heavy windows: the library's threats, as they decide now (under the
    // library's current adaptation), flag most flows.
    let mut flagged_before = 0;
    if let (Some(lib), Some(current)) = (library, &current) {
        if !current.threats.is_empty() {
            let (reference, current_profile) = lib.reference(model)?;
            let current_adaptation = current_profile.and_then(|p| p.adaptation);
            let decider = Decider::new(reference, current.threats.clone(), f32::INFINITY)?;
            let under_current;
            let now: &[f32] = if current_adaptation == adaptation {
                &embeddings
            } else {
                let x = model
                    .site_normaliser(current_adaptation.as_ref())?
                    .transform(frame, rows)
                    .map_err(|e| LibraryError::Model(Box::new(e.into())))?;
                under_current = kernel.embed(&x)?;
                &under_current
            };
            flagged_before = now
                .chunks_exact(dim)
                .filter(|e| decider.decide(e).kind == VerdictKind::Threat)
                .count();
            let share = flagged_before as f64 / rows.len() as f64;
            if share > ATTACK_WINDOW && !options.force {
                return Err(LibraryError::AttackWindow {
                    flagged: flagged_before,
                    total: rows.len(),
                });
            }
        }
    }
    let mut profile = SiteProfile::learn(&embeddings, dim, sources, options.profile)?;
    let mut forest_rows = (Vec::new(), 0);
    if options.threat_rule == ThreatRule::Forest {
        if normaliser.kind == metaids_core::schema::DatasetKind::HttpRequests {
            return Err(LibraryError::Invalid {
                field: "threat rule".into(),
                message: "the site forest names flow threats; a web-request model's threats are named by their prototypes (--threat-rule prototypes)".into(),
            });
        }
        let d = normaliser.output_dim();
        forest_rows = if options.source_context {
            let context = source_context(frame, rows);
            let w = metaids_core::context::CONTEXT_WIDTH;
            (metaids_core::context::with_context(&x, d, &context), d + w)
        } else {
            (x, d)
        };
        profile =
            profile.with_forest_rows(&forest_rows.0, forest_rows.1, sources, options.profile)?;
        profile.source_context = options.source_context;
    }
    profile.adaptation = adaptation;
    Ok(LearntProfile {
        profile,
        embeddings,
        embed_seconds,
        flagged_before,
        forest_rows,
    })
}
