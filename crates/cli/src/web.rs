//! Web requests for a model trained on `http-requests`: each request's values (query and form
//! pairs, other bodies whole: `metaids_http::params`) become feature rows, and the request the
//! unit that `detect` decides and `threat add` enrols. No decision here: the rows go through the
//! detect pipeline (`Pipeline::push_requests`) or the library's enrolment like flows. The rows
//! themselves are gathered by `metaids_detect::RequestRows` (shared with `serve`); this module
//! picks what `threat add` and `baseline` take from them.

use std::collections::HashMap;

use metaids_core::schema::DatasetKind;
use metaids_detect::{FlowMeta, RequestRows};

/// Whether the model scores web requests (trained on `http-requests`); access logs and request
/// files given to a flow model are refused, naming the model.
pub(crate) fn is_web_model(
    model_path: &std::path::Path,
    model: &metaids_model::ThreatModel,
    requests: &crate::args::RequestSourceArgs,
) -> anyhow::Result<bool> {
    let kind = model.normaliser.kind;
    let web = kind == DatasetKind::HttpRequests;
    let given = !requests.access_log.is_empty() || !requests.request_file.is_empty();
    if given && !web {
        anyhow::bail!(
            "--access-log and --request-file need a model trained with --dataset http-requests; model {} was trained on {kind} data",
            model_path.display()
        );
    }
    Ok(web)
}

/// Most requests `threat add` reads as candidates (each is kept in memory until the support is
/// drawn).
pub(crate) const MAX_CANDIDATE_REQUESTS: usize = 200_000;

/// The field of a request's `k`-th value.
fn field_of(meta: &FlowMeta, k: usize) -> Option<&str> {
    meta.http
        .as_ref()
        .and_then(|h| h.values.get(k))
        .map(|v| v.field.as_str())
}

/// The requests of `pcaps` and `inputs` as candidate support rows for `threat add`: one row per
/// request with a value, located as `line N` (or `request N`) and its field. Which value: an
/// attack request carries the payload in one parameter among ordinary ones, and the payload is
/// what the requests have in common. Each request first gives its value farthest from
/// `reference`'s benign prototypes (embedded under `normaliser`); then, with three requests or
/// more, when more than half of those picks are in one field (`query:q`: a tool injecting one
/// parameter), every request that has that field gives it instead (a request whose payload looks
/// less odd than its ordinary value still gives the payload when the others agree on where it is).
pub(crate) fn candidates(
    pcaps: &[std::path::PathBuf],
    inputs: &crate::args::RequestSourceArgs,
    model: &metaids_model::ThreatModel,
    normaliser: &metaids_core::preprocess::Normaliser,
    reference: &metaids_decide::BenignReference,
) -> anyhow::Result<crate::candidates::Candidates> {
    let mut rows = RequestRows::new();
    crate::requests_cmd::read_requests(pcaps, inputs, &mut |seen| {
        if rows.len() >= MAX_CANDIDATE_REQUESTS {
            anyhow::bail!(
                "more than {MAX_CANDIDATE_REQUESTS} requests with values; give fewer or smaller inputs"
            );
        }
        rows.push(seen, "request");
        Ok(())
    })?;
    if rows.without_values > 0 {
        eprintln!(
            "{} request(s) without a query or body value were left out",
            rows.without_values
        );
    }
    let RequestRows {
        frame,
        counts,
        metas,
        unit,
        ..
    } = rows;
    if metas.is_empty() {
        anyhow::bail!("no request with a query or body value to enrol from");
    }
    model.check_layout(&frame.layout)?;
    let all: Vec<usize> = (0..frame.len()).collect();
    let x = normaliser.transform(&frame, &all)?;
    let emb = model.embed(&x)?;
    let dim = model.dim();
    let row = |r: usize| &emb[r * dim..(r + 1) * dim];
    let mut groups = Vec::with_capacity(counts.len());
    let mut start = 0;
    for &n in &counts {
        groups.push(start..start + n);
        start += n;
    }
    let mut chosen: Vec<usize> = groups
        .iter()
        .map(|g| {
            g.clone()
                .max_by(|&a, &b| {
                    reference
                        .benign_distance(row(a))
                        .total_cmp(&reference.benign_distance(row(b)))
                })
                .unwrap_or(g.start)
        })
        .collect();
    // The field most requests' least benign value sits in, when more than half agree.
    let mut votes: HashMap<&str, usize> = HashMap::new();
    for ((meta, g), &best) in metas.iter().zip(&groups).zip(&chosen) {
        if let Some(f) = field_of(meta, best - g.start) {
            *votes.entry(f).or_default() += 1;
        }
    }
    let majority = votes
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .filter(|(_, &n)| groups.len() >= 3 && n * 2 > groups.len())
        .map(|(f, _)| f.to_string());
    if let Some(field) = &majority {
        for ((meta, g), best) in metas.iter().zip(&groups).zip(chosen.iter_mut()) {
            if let Some(k) = (0..g.len()).find(|&k| field_of(meta, k) == Some(field.as_str())) {
                *best = g.start + k;
            }
        }
        eprintln!("enrolling each request's {field} (the least benign value of most requests)");
    }
    let mut locators = vec![(String::new(), String::new()); frame.len()];
    for (((meta, g), unit), &best) in metas.iter().zip(&groups).zip(unit).zip(&chosen) {
        let field = meta
            .http
            .as_ref()
            .and_then(|h| h.values.get(best - g.start))
            .map_or_else(String::new, |v| v.field.clone());
        locators[best] = (
            meta.origin.source.to_string(),
            format!("{unit} {} {field}", meta.origin.index),
        );
    }
    Ok(crate::candidates::Candidates {
        frame,
        rows: chosen,
        locators,
    })
}

/// The site's benign requests as baseline rows: every value of every request, each with its
/// client address as its source for the per-source cap (a request file, which has none: the
/// request itself, `FILE:LINE`).
pub(crate) fn baseline_rows(
    pcaps: &[std::path::PathBuf],
    inputs: &crate::args::RequestSourceArgs,
) -> anyhow::Result<BaselineRows> {
    let mut rows = RequestRows::new();
    crate::requests_cmd::read_requests(pcaps, inputs, &mut |seen| {
        if rows.frame.len() >= MAX_CANDIDATE_REQUESTS {
            anyhow::bail!(
                "more than {MAX_CANDIDATE_REQUESTS} request values in the baseline window; give a shorter window"
            );
        }
        rows.push(seen, "benign");
        Ok(())
    })?;
    if rows.without_values > 0 {
        eprintln!(
            "{} request(s) without a query or body value have nothing to learn from",
            rows.without_values
        );
    }
    let (frame, counts, metas) = rows.take();
    let mut sources = Vec::with_capacity(frame.len());
    let mut locators = Vec::with_capacity(frame.len());
    for (meta, &n) in metas.iter().zip(&counts) {
        let source = meta
            .src_ip
            .map_or_else(|| meta.origin.to_string(), |ip| ip.to_string());
        let values = meta
            .http
            .as_ref()
            .map(|h| h.values.as_slice())
            .unwrap_or(&[]);
        for k in 0..n {
            sources.push(source.clone());
            locators.push((
                meta.origin.to_string(),
                values.get(k).map_or_else(String::new, |v| v.field.clone()),
            ));
        }
    }
    let rows: Vec<usize> = (0..frame.len()).collect();
    Ok(BaselineRows {
        requests: metas.len(),
        candidates: crate::candidates::Candidates {
            frame,
            rows,
            locators,
        },
        sources,
    })
}

/// The site's benign requests as baseline rows ([`baseline_rows`]).
pub(crate) struct BaselineRows {
    /// One row per value.
    pub candidates: crate::candidates::Candidates,
    /// Each row's source for the per-source cap.
    pub sources: Vec<String>,
    /// Requests the values come from.
    pub requests: usize,
}

impl BaselineRows {
    /// The per-value budget that holds `per_request` for the window's requests: a request is
    /// flagged when any of its values is, so the share of requests flagged is at most the mean
    /// number of flagged values per request (the union bound) — the per-value share times the
    /// mean values per request.
    pub fn value_budget(&self, per_request: f64) -> f64 {
        let values = self.candidates.rows.len() as f64;
        per_request * self.requests.max(1) as f64 / values.max(1.0)
    }
}
