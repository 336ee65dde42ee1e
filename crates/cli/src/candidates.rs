//! Candidate rows for a library change: what `threat add` draws its support from and `baseline`
//! learns from (flow-file rows, capture flows, web requests' values).

use metaids_core::FlowFrame;

/// Candidate flows: a frame, its rows to choose from, and each row's (source, locator).
pub struct Candidates {
    /// The flows, in the model's layout.
    pub frame: FlowFrame,
    /// Rows to choose support flows from.
    pub rows: Vec<usize>,
    /// Each row's (source, locator).
    pub locators: Vec<(String, String)>,
}
