//! metaids-decide: the decision core. The embedding geometry ([`geometry`]: squared distance, the
//! budget quantile, k-means), the benign reference ([`reference`]), the one [`Threat`] type with its
//! fit and enrolment guard ([`threat`]), and the one verdict rule with its [`Decider`] ([`verdict`]).
//!
//! The model, the threat library, the detector and the benchmark protocols all decide through this
//! crate, so changing a threshold rule is a change in one place. Pure: no file, no encoder, no
//! framework — callers pass embeddings.

#![forbid(unsafe_code)]

pub mod error;
pub mod forest;
pub mod geometry;
pub mod packed;
pub mod reference;
pub mod rule;
pub mod site;
pub mod site_forest;
pub mod threat;
pub mod verdict;

pub use error::{DecideError, Result};
pub use reference::{BenignReference, FamilyPrototype};
pub use site::{
    calibrate_jointly, kept_flows, ColumnRefit, JointReport, NormaliserRefit, ProfileOptions,
    SiteProfile, ThreatRule,
};
pub use site_forest::SiteForest;
pub use threat::{
    check_flows, check_name, check_severity, confirmation_doubt, fit, seed_for, EnrolOptions,
    EnrolmentReport, Fit, FlowValues, ForestCheck, SupportFlow, Threat, ThreatDraft, MAX_EXAMPLES,
    MAX_PROTOTYPES, MAX_THREAT_ID, SIGNATURE_BASE, UNKNOWN_SIGNATURE_ID,
};
pub use verdict::{rule, Decider, Verdict, VerdictKind};
