//! The one error type of the wire: every vendor error code with its HTTP status and exact text.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    /// Extra top-level keys of the error body (`argument` for `ERROR_ARGUMENT`).
    pub argument: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self { status, code, description: description.into(), argument: None }
    }

    pub fn bad_request(code: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, description)
    }

    /// `ACCESS_DENIED` texts always begin with "Access denied!".
    pub fn access_denied(reason: &str) -> Self {
        let text = if reason.is_empty() { "Access denied!".to_string() } else { format!("Access denied! {reason}") };
        Self::new(StatusCode::FORBIDDEN, "ACCESS_DENIED", text)
    }

    pub fn argument_invalid_type(name: &str) -> Self {
        Self::argument(name, format!("The value of an argument '{name}' has an invalid type"))
    }

    pub fn argument_null_or_empty(name: &str) -> Self {
        Self::argument(name, format!("Argument '{name}' is null or empty"))
    }

    pub fn argument(name: &str, description: String) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "ERROR_ARGUMENT", description, argument: Some(name.to_string()) }
    }

    pub fn method_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    }

    pub fn no_auth_found() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "NO_AUTH_FOUND", "Wrong authorization data")
    }

    pub fn invalid_credentials() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "Invalid request credentials")
    }

    pub fn invalid_token() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", "Unable to get application by token")
    }

    pub fn https_required() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "INVALID_REQUEST", "Https required.")
    }

    pub fn insufficient_scope(by: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "insufficient_scope",
            format!("The request requires higher privileges than provided by the {by}"),
        )
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_SERVER_ERROR", "Internal server error")
    }

    pub fn payload_too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "REQUEST_TOO_LARGE", "Request body is too large")
    }

    /// The vendor's body: `{"error", "error_description"}` plus `argument` when there is one.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("error_description".into(), json!(self.description));
        if let Some(argument) = &self.argument {
            body.insert("argument".into(), json!(argument));
        }
        Value::Object(body)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        // Storage faults are logged with context and never shown: no SQL text reaches a client.
        tracing::error!(error = %err, "storage fault");
        Self::internal()
    }
}
