//! The crate's single error type, [`DecideError`]: a value a caller passed (a support flow, a budget,
//! a threat read from a document) that no rule can use. It names the field and says what was expected.

/// A value the decision core refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecideError {
    /// A field holds a value outside what the rule accepts.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault (e.g. `support[3].embedding`, `budget`, `threats[0].threshold`).
        field: String,
        /// Expected versus found.
        message: String,
    },
}

impl DecideError {
    /// An [`DecideError::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DecideError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, DecideError>;
