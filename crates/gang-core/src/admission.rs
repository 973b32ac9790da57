//! Admission control (stub).
/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// Placeholder.
    #[error("refused")]
    Refused,
}
