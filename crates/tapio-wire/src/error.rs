//! The controller's error body and the status-code policy.

use serde::{Deserialize, Serialize};

/// Machine-matchable error codes. `Unknown` is the receiver-side catch-all:
/// an agent must not fail to read an error body because a newer controller
/// added a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    MissingField,
    UnsupportedVersion,
    InvalidField,
    MalformedJson,
    PayloadTooLarge,
    /// The request head exceeded the controller's limit (431).
    HeadersTooLarge,
    ReasoningField,
    UnknownEndpoint,
    MethodNotAllowed,
    Unauthorized,
    /// An instance id already bound to another agent id (409).
    InstanceConflict,
    /// The batch could not be stored now (the export failed): retry (503).
    Unavailable,
    InternalError,
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a v1 controller sends.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InstanceConflict,
        ErrorCode::Unavailable,
        ErrorCode::HeadersTooLarge,
        ErrorCode::MissingField,
        ErrorCode::UnsupportedVersion,
        ErrorCode::InvalidField,
        ErrorCode::MalformedJson,
        ErrorCode::PayloadTooLarge,
        ErrorCode::ReasoningField,
        ErrorCode::UnknownEndpoint,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unauthorized,
        ErrorCode::InternalError,
    ];

    /// The HTTP status that goes with the code (docs/wire-v1.md).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::MissingField
            | ErrorCode::UnsupportedVersion
            | ErrorCode::InvalidField
            | ErrorCode::MalformedJson => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::UnknownEndpoint => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::InstanceConflict => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::ReasoningField => 422,
            ErrorCode::InternalError | ErrorCode::Unknown => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MissingField => "MISSING_FIELD",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::InvalidField => "INVALID_FIELD",
            ErrorCode::MalformedJson => "MALFORMED_JSON",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::HeadersTooLarge => "HEADERS_TOO_LARGE",
            ErrorCode::ReasoningField => "REASONING_FIELD",
            ErrorCode::UnknownEndpoint => "UNKNOWN_ENDPOINT",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::InstanceConflict => "INSTANCE_CONFLICT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }
}

/// `{ "error": { "code": ..., "message": ... } }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

/// A payload that failed decoding or validation. Every variant that concerns
/// a field carries its path (`events[3].facts.root_cause`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{0} is required")]
    MissingField(String),
    #[error("{path}: {reason}")]
    InvalidField { path: String, reason: String },
    #[error("unsupported wire_version {0:?}; this controller speaks tapio-wire/v1")]
    UnsupportedVersion(String),
    #[error("{0}: reasoning fields are not evidence; send facts only")]
    ReasoningField(String),
    #[error("{0}")]
    MalformedJson(String),
}

impl WireError {
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::MissingField(_) => ErrorCode::MissingField,
            WireError::InvalidField { .. } => ErrorCode::InvalidField,
            WireError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            WireError::ReasoningField(_) => ErrorCode::ReasoningField,
            WireError::MalformedJson(_) => ErrorCode::MalformedJson,
        }
    }

    /// The field path, where the error concerns a field.
    pub fn path(&self) -> Option<&str> {
        match self {
            WireError::MissingField(p) | WireError::ReasoningField(p) => Some(p),
            WireError::InvalidField { path, .. } => Some(path),
            WireError::UnsupportedVersion(_) => Some("wire_version"),
            WireError::MalformedJson(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_policy_matches_the_spec_table() {
        let expect = [
            ("MISSING_FIELD", 400),
            ("UNSUPPORTED_VERSION", 400),
            ("INVALID_FIELD", 400),
            ("MALFORMED_JSON", 400),
            ("PAYLOAD_TOO_LARGE", 413),
            ("HEADERS_TOO_LARGE", 431),
            ("REASONING_FIELD", 422),
            ("UNKNOWN_ENDPOINT", 404),
            ("INTERNAL_ERROR", 500),
            ("METHOD_NOT_ALLOWED", 405),
            ("UNAUTHORIZED", 401),
            ("INSTANCE_CONFLICT", 409),
            ("UNAVAILABLE", 503),
        ];
        for code in ErrorCode::ALL {
            let (_, status) = expect
                .iter()
                .find(|(name, _)| *name == code.as_str())
                .expect("every code is in the table");
            assert_eq!(code.http_status(), *status, "{code:?}");
            // serde name and as_str agree
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().into())
            );
        }
    }

    #[test]
    fn error_body_shape() {
        let b = ErrorBody::new(ErrorCode::MissingField, "agent_id is required");
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"error":{"code":"MISSING_FIELD","message":"agent_id is required"}}"#
        );
    }

    #[test]
    fn unknown_code_is_caught_by_catch_all() {
        let b: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"RATE_LIMITED","message":"x"}}"#).unwrap();
        assert_eq!(b.error.code, ErrorCode::Unknown);
    }

    #[test]
    fn wire_errors_map_to_codes() {
        assert_eq!(
            WireError::MissingField("a".into()).code().http_status(),
            400
        );
        assert_eq!(
            WireError::ReasoningField("a".into()).code().http_status(),
            422
        );
        assert_eq!(
            WireError::UnsupportedVersion("tapio-wire/v2".into()).code(),
            ErrorCode::UnsupportedVersion
        );
    }
}
