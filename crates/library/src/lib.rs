//! metaids-library: the threat library. Enrolled threats (prototypes in the model's embedding space,
//! a calibrated threshold, the provenance of every support flow, negatives from rejected alerts) live
//! in one versioned redb file: every change is a new version, any earlier version can be restored,
//! and a crash never corrupts it. Enrolment is guarded: a threat whose support would flag more benign
//! reference flows than the false-positive budget allows is refused unless forced. Threats are shared
//! as JSON documents tied to the model they belong to.
//!
//! This crate does not read flow files (the caller does); it embeds flows the caller read only to
//! learn a site profile ([`learn`]) or to follow a change of the site adaptation ([`reembed`]). It
//! does not detect: the detector scores flows with [`Threat::flags`] / [`Threat::margin`].

#![forbid(unsafe_code)]

pub mod armed;
pub mod error;
pub mod exchange;
pub mod learn;
pub mod reembed;
pub mod store;
/// Threats, their fit and the enrolment guard: the decision core's (one `Threat` type in the
/// workspace), re-exported under the name callers know.
pub use metaids_decide::threat;
mod time;

pub use armed::{ArmedThreats, ThreatOrigin};
pub use error::{LibraryError, Result};
pub use exchange::{
    ImportSummary, ThreatDocument, DOCUMENT_FORMAT, DOCUMENT_VERSION, DOCUMENT_VERSION_PLAIN,
};
pub use learn::{
    learn_site_profile, source_addresses, source_context, LearnOptions, LearntProfile,
    ATTACK_WINDOW, CONTEXT_SOURCES,
};
pub use metaids_decide::threat::{
    EnrolOptions, EnrolmentReport, FlowValues, SupportFlow, Threat, ThreatDraft, SIGNATURE_BASE,
};
pub use reembed::{
    forest_guard, kernel_of, reembed_flows, reembed_threats, site_forest, support_flows,
    support_rows, timing_shift, ArmedForest, Reembedded,
};
pub use store::{
    Baseline, Enrolment, LibraryVersion, ModelIdentity, SiteRef, ThreatLibrary, VersionSummary,
    CHECK_THREAD, LIBRARY_FORMAT, LIBRARY_FORMAT_PLAIN, MAX_THREAT_ID,
};
