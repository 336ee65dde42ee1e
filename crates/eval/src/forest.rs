//! The histogram random forest of the classical baselines: the decision core's
//! ([`metaids_decide::forest`]), which the site forest of a deployed library also uses.

pub use metaids_decide::forest::*;
