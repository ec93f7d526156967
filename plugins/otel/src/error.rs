//! The plugin's one error type: what is wrong with a request, and its HTTP status.

/// Why a request is answered with an error.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// The body is not a valid OTLP export request (nothing is written).
    #[error("{0}")]
    Malformed(String),
    /// A content type or encoding the receiver does not read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("no OTLP endpoint at {0}: POST to /v1/logs, /v1/traces or /v1/metrics")]
    NotFound(String),
    #[error("{0} is not allowed: OTLP/HTTP exports are POST requests")]
    MethodNotAllowed(String),
    /// A row the plugin built does not fit its own schema: a bug, never the client's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl OtelError {
    pub fn status(&self) -> u16 {
        match self {
            OtelError::Malformed(_) => 400,
            OtelError::UnsupportedMediaType(_) => 415,
            OtelError::NotFound(_) => 404,
            OtelError::MethodNotAllowed(_) => 405,
            OtelError::Internal(_) => 500,
        }
    }
}
