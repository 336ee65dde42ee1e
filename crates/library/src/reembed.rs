//! Embedding kept flows again when the site adaptation changes: a threat keeps its support and
//! negative flows' feature values ([`FlowValues`]), so a new baseline (whose profile may preprocess
//! with the site's refit normaliser) or an import into a library with another adaptation embeds them
//! under the normaliser now in force before any prototype is refitted.

use metaids_core::preprocess::Normaliser;
use metaids_decide::site::{SiteProfile, ThreatRule};
use metaids_decide::threat::{FlowValues, ForestCheck, SupportFlow, Threat};
use metaids_decide::SiteForest;
use metaids_model::{ScoringKernel, ThreatModel};

use crate::error::{LibraryError, Result};

/// What [`reembed_threats`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reembedded {
    /// Flows embedded again.
    pub flows: usize,
    /// Per threat, flows dropped for having no feature values (feedback from alerts, or enrolled
    /// by an earlier build): `(threat, support dropped, negatives dropped)`.
    pub dropped: Vec<(String, usize, usize)>,
}

/// The preprocessed input of one flow's values under `normaliser`, or `None` without values;
/// values of another width are an error naming the flow.
fn input(normaliser: &Normaliser, flow: &SupportFlow, out: &mut [f32]) -> Result<bool> {
    let FlowValues {
        numeric,
        categorical,
    } = &flow.values;
    if flow.values.is_empty() {
        return Ok(false);
    }
    let cats: Vec<&str> = categorical.iter().map(String::as_str).collect();
    normaliser
        .transform_values(numeric, &cats, out)
        .map_err(|e| LibraryError::Invalid {
            field: format!("values of {} {}", flow.source, flow.locator),
            message: e.to_string(),
        })?;
    Ok(true)
}

/// Support flows for `rows` of `frame` (`locators`: each row's source and locator): preprocessed
/// with `normaliser` (the model's, or the library's site refit of it) and embedded by the scoring
/// kernel, keeping their feature values so they can be embedded again when the site adaptation
/// changes. What `threat add`, the demo and `serve`'s enrolment build a draft from.
pub fn support_flows(
    model: &ThreatModel,
    normaliser: &Normaliser,
    frame: &metaids_core::FlowFrame,
    rows: &[usize],
    locators: &[(String, String)],
) -> Result<Vec<SupportFlow>> {
    model
        .check_layout(&frame.layout)
        .map_err(|e| LibraryError::Model(Box::new(e)))?;
    let x = normaliser
        .transform(frame, rows)
        .map_err(|e| LibraryError::Invalid {
            field: "support flows".into(),
            message: e.to_string(),
        })?;
    let emb = kernel_of(model)?
        .embed(&x)
        .map_err(|e| LibraryError::Model(Box::new(e)))?;
    // Each flow's source context, counted over every flow of its frame in order (the capture or
    // flow file it came from), as detection counts it over the stream.
    let all: Vec<usize> = (0..frame.len()).collect();
    let context = crate::learn::source_context(frame, &all);
    let w = metaids_core::context::CONTEXT_WIDTH;
    Ok(rows
        .iter()
        .zip(emb.chunks_exact(model.dim()))
        .map(|(&r, e)| SupportFlow {
            source: locators[r].0.clone(),
            locator: locators[r].1.clone(),
            embedding: e.to_vec(),
            values: FlowValues {
                numeric: frame.numeric_row(r).to_vec(),
                categorical: frame.categorical_row(r).map(String::from).collect(),
            },
            context: context.get(r * w..(r + 1) * w).unwrap_or(&[]).to_vec(),
        })
        .collect())
}

/// The model's scoring kernel (the detection path), built once per re-embedding.
pub fn kernel_of(model: &ThreatModel) -> Result<ScoringKernel> {
    ScoringKernel::for_model(model).map_err(|e| LibraryError::Model(Box::new(e)))
}

/// Embeds every flow of `flows` that has feature values again, preprocessed by `normaliser`
/// (the model's, or a site profile's refit of it) and embedded by `kernel` ([`kernel_of`]).
/// Returns the indices of the flows without values (left unchanged).
pub fn reembed_flows(
    kernel: &ScoringKernel,
    normaliser: &Normaliser,
    flows: &mut [SupportFlow],
) -> Result<Vec<usize>> {
    let d = normaliser.output_dim();
    let mut x = Vec::with_capacity(flows.len() * d);
    let mut with = Vec::with_capacity(flows.len());
    let mut without = Vec::new();
    let mut row = vec![0f32; d];
    for (i, f) in flows.iter().enumerate() {
        if input(normaliser, f, &mut row)? {
            x.extend_from_slice(&row);
            with.push(i);
        } else {
            without.push(i);
        }
    }
    if with.is_empty() {
        return Ok(without);
    }
    let emb = kernel
        .embed(&x)
        .map_err(|e| LibraryError::Model(Box::new(e)))?;
    for (&i, e) in with.iter().zip(emb.chunks_exact(kernel.config().embedding)) {
        flows[i].embedding = e.to_vec();
    }
    Ok(without)
}

/// Embeds every threat's support and negative flows again under `normaliser`; flows without
/// feature values cannot follow the new adaptation and are dropped (counted). A threat left with
/// no support flow is an error naming it: enrol it again from its flows.
pub fn reembed_threats(
    model: &ThreatModel,
    normaliser: &Normaliser,
    threats: &mut [Threat],
) -> Result<Reembedded> {
    let kernel = kernel_of(model)?;
    let mut out = Reembedded::default();
    for t in threats.iter_mut() {
        let mut dropped = [0usize; 2];
        for (k, flows) in [&mut t.support, &mut t.negatives].into_iter().enumerate() {
            let without = reembed_flows(&kernel, normaliser, flows)?;
            out.flows += flows.len() - without.len();
            dropped[k] = without.len();
            let mut i = 0;
            flows.retain(|_| {
                let keep = without.binary_search(&i).is_err();
                i += 1;
                keep
            });
        }
        if t.support.is_empty() {
            return Err(LibraryError::Invalid {
                field: format!("threat {:?}", t.name),
                message: "none of its support flows keeps its feature values (they came from alerts, or an earlier build enrolled them), so it cannot follow the site adaptation: enrol it again from its flows, or baseline with --adapt none".into(),
            });
        }
        if dropped != [0, 0] {
            out.dropped.push((t.name.clone(), dropped[0], dropped[1]));
        }
    }
    Ok(out)
}

/// Each threat's support flows preprocessed by `normaliser` (rows of its output width): what the
/// site forest is fitted on. Flows without feature values (confirmed from alerts) are left out; a
/// threat left with none is an error naming it.
pub fn support_rows(
    normaliser: &Normaliser,
    threats: &[Threat],
    context: bool,
) -> Result<Vec<Vec<f32>>> {
    threats
        .iter()
        .map(|t| {
            let rows = forest_rows(normaliser, &t.support, context)?;
            if rows.is_empty() {
                return Err(LibraryError::Invalid {
                    field: format!("threat {:?}", t.name),
                    message: format!(
                        "none of its support flows keeps its feature values{} (they came from alerts, or an earlier build enrolled them), so the site forest cannot learn it: enrol it again from its flows, or learn the baseline {}",
                        if context { " and source context" } else { "" },
                        if context {
                            "without source context (`--no-source-context`; `source_context=false` in the API) or with the prototype rule (`--threat-rule prototypes`; `threat_rule=prototypes`)"
                        } else {
                            "with the prototype rule (`--threat-rule prototypes`; `threat_rule=prototypes` in the API)"
                        }
                    ),
                });
            }
            Ok(rows)
        })
        .collect()
}

/// The site forest's rows of the `flows` that keep feature values (and, when `context`, their
/// source context), preprocessed by `normaliser`, row-major; the others are left out.
fn forest_rows(normaliser: &Normaliser, flows: &[SupportFlow], context: bool) -> Result<Vec<f32>> {
    let d = normaliser.output_dim();
    let w = metaids_core::context::CONTEXT_WIDTH;
    let mut row = vec![0f32; d];
    let mut rows = Vec::with_capacity(flows.len() * (d + w));
    for f in flows {
        if context && f.context.len() != w {
            continue;
        }
        if input(normaliser, f, &mut row)? {
            rows.extend_from_slice(&row);
            if context {
                rows.extend_from_slice(&f.context);
            }
        }
    }
    Ok(rows)
}

/// A site forest with the rows that veto it.
#[derive(Debug, Clone)]
pub struct ArmedForest {
    /// The forest.
    pub forest: SiteForest,
    /// Per threat, its support rows and the rows of its negative flows (flows an analyst rejected
    /// as it) that keep their feature values: the forest's feature-space veto
    /// ([`metaids_decide::Decider::with_rejected_rows`]). Negatives from alerts written without
    /// values are left out (the embedding's veto still covers them).
    pub vetoes: Vec<(Vec<f32>, Vec<f32>)>,
}

/// The site forest that names `threats` on a profile with the forest rule (`None` with the
/// prototype rule, or with no threat to name), fitted on their support flows preprocessed by
/// `normaliser` — the profile's: the model's normaliser with the profile's adaptation — with its
/// veto rows.
pub fn site_forest(
    normaliser: &Normaliser,
    profile: &SiteProfile,
    threats: &[Threat],
) -> Result<Option<ArmedForest>> {
    if profile.threat_rule != ThreatRule::Forest || threats.is_empty() {
        return Ok(None);
    }
    let width = normaliser.output_dim()
        + if profile.source_context {
            metaids_core::context::CONTEXT_WIDTH
        } else {
            0
        };
    if profile.row_width != width {
        return Err(LibraryError::Invalid {
            field: "site profile".into(),
            message: format!(
                "its feature rows have {} values, the model's preprocessed rows{} have {width}: learn the baseline again",
                profile.row_width,
                if profile.source_context { " with their source context" } else { "" },
            ),
        });
    }
    let support = support_rows(normaliser, threats, profile.source_context)?;
    let forest = profile.site_forest(&support, &timing_shift(normaliser))?;
    let vetoes = threats
        .iter()
        .zip(support)
        .map(|(t, s)| {
            Ok((
                s,
                forest_rows(normaliser, &t.negatives, profile.source_context)?,
            ))
        })
        .collect::<Result<_>>()?;
    Ok(Some(ArmedForest { forest, vetoes }))
}

/// The forest rule's enrolment guard for `threats[which]` (the threat being enrolled, refitted or
/// imported, beside the others): each of its support flows with feature values is left out in
/// turn, the site forest fitted without it, and the flow decided.
pub fn forest_guard(
    normaliser: &Normaliser,
    profile: &SiteProfile,
    threats: &[Threat],
    which: usize,
) -> Result<ForestCheck> {
    let support = support_rows(normaliser, threats, profile.source_context)?;
    Ok(profile.forest_check(&support, which, &timing_shift(normaliser))?)
}

/// The site forest's timing jitter for rows preprocessed by `normaliser`
/// ([`metaids_decide::site_forest::jittered`] at [`metaids_decide::site_forest::TIMING_FACTOR`]; the
/// source context columns after them are not moved).
pub fn timing_shift(normaliser: &Normaliser) -> Vec<f32> {
    normaliser.timing_shift(metaids_decide::site_forest::TIMING_FACTOR)
}
