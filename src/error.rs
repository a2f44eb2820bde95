//! The one error catalogue of the wire: every vendor error code crmchat can answer, with its HTTP status and
//! exact text, defined once. Methods, the protocol layer, batch and fault injection all build their errors
//! from it, so a faulted answer is byte for byte the real one.
//!
//! A code has one canonical text (what a fault rule sends). Where the vendor answers the same code with other
//! fixed texts (the reasons after `Access denied!`, two texts of `CRM_CHAT_EMPTY_CRM_DATA` …) they are
//! [`Variant`]s, listed here too; texts that embed a value (an argument's name) have a named constructor.

use std::borrow::Cow;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

/// Defines [`Code`] and its table in one place, so that a code, its status and its text cannot drift apart.
macro_rules! catalogue {
    ($($variant:ident => $code:literal, $status:literal, $text:literal;)*) => {
        /// Every vendor error code crmchat can answer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// The whole catalogue, in the order it is listed (`GET /_crmchat/errors`).
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as it goes on the wire (case matters: clients branch on it).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            pub fn status(self) -> StatusCode {
                let status: u16 = match self {
                    $(Code::$variant => $status,)*
                };
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }

            /// The canonical text.
            pub const fn text(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }
        }
    };
}

catalogue! {
    // Authentication (protocol.md).
    NoAuthFound => "NO_AUTH_FOUND", 401, "Wrong authorization data";
    InvalidCredentials => "INVALID_CREDENTIALS", 401, "Invalid request credentials";
    InvalidToken => "invalid_token", 401, "Unable to get application by token";
    ExpiredToken => "expired_token", 401, "The access token provided has expired";
    AuthorizationError => "authorization_error", 401, "Unable to authorize user";
    InsufficientScope => "insufficient_scope", 401,
        "The request requires higher privileges than provided by the webhook token";
    InvalidRequest => "INVALID_REQUEST", 401, "Https required.";
    AccessDenied => "ACCESS_DENIED", 403, "Access denied!";
    WrongAuthType => "WRONG_AUTH_TYPE", 403, "Current authorization type is denied for this method";
    // Dispatch, limits and the body.
    MethodNotFound => "ERROR_METHOD_NOT_FOUND", 404, "Method not found!";
    OperationTimeLimit => "OPERATION_TIME_LIMIT", 429, "Method is blocked due to operation time limit.";
    QueryLimitExceeded => "QUERY_LIMIT_EXCEEDED", 503, "Too many requests";
    InternalServerError => "INTERNAL_SERVER_ERROR", 500, "Internal server error";
    Argument => "ERROR_ARGUMENT", 400, "Invalid argument";
    RequestTooLarge => "REQUEST_TOO_LARGE", 413, "Request body is too large";
    RequestTimeout => "REQUEST_TIMEOUT", 408, "Request body was not received in time";
    // batch.
    BatchLengthExceeded => "ERROR_BATCH_LENGTH_EXCEEDED", 400, "Max batch length exceeded";
    BatchMethodNotAllowed => "ERROR_BATCH_METHOD_NOT_ALLOWED", 400, "Method is not allowed for batch usage";
    // imopenlines.crm.chat.*, imopenlines.crm.message.add, im.chat.user.list (methods.md).
    CrmChatEmptyCrmData => "CRM_CHAT_EMPTY_CRM_DATA", 400, "Empty CRM data";
    CrmChatEmptyUser => "CRM_CHAT_EMPTY_USER", 400, "Empty User ID";
    CrmChatUserNotActive => "CRM_CHAT_USER_NOT_ACTIVE", 400, "User not active";
    ChatDeleteUserPermissionDenied => "CHAT_DELETE_USER_PERMISSION_DENIED", 403,
        "You don't have access to delete a user from this chat";
    UserNotFound => "USER_NOT_FOUND", 400, "The specified user is not in chat.";
    WrongRequest => "WRONG_REQUEST", 400, "You don't have access or user already not in chat";
    ImNotInstalled => "IM_NOT_INSTALLED", 400, "Messenger is not installed.";
    ChatNotInCrm => "CHAT_NOT_IN_CRM", 400, "Chat does not belong to the CRM entity being checked";
    MessageAddError => "MESSAGE_ADD_ERROR", 400, "Message isn't added";
    ChatIdEmpty => "CHAT_ID_EMPTY", 400, "Chat ID can't be empty";
    ChatNotFound => "CHAT_NOT_FOUND", 400, "Chat not found";
    // event.* (the event methods).
    EventNotFound => "ERROR_EVENT_NOT_FOUND", 400, "Event not found";
    WrongHandlerUrl => "ERROR_WRONG_HANDLER_URL", 400, "Wrong handler URL";
    UnsupportedProtocol => "ERROR_UNSUPPORTED_PROTOCOL", 400, "Unsupported handler protocol";
    Core => "ERROR_CORE", 400, "Unable to set event handler: Handler already binded";
    // REST 3.0 (`/rest/api/...`), answered in its own envelope (`ApiError::v3_body`). The vendor builds the code
    // from the exception's class name and puts the method's name where `#METHOD#` stands
    // (`ApiError::v3_method_not_found`).
    V3MethodNotFound => "BITRIX_REST_V3_EXCEPTION_METHODNOTFOUNDEXCEPTION", 404, "Method \"#METHOD#\" was not found.";
    // The OAuth token endpoint `/oauth/token/`.
    OauthInvalidRequest => "invalid_request", 400, "Invalid request";
    OauthInvalidGrant => "invalid_grant", 400, "Invalid authorization code";
    OauthInvalidClient => "invalid_client", 401, "Invalid client credentials";
}

impl Code {
    /// The code named `name` exactly (case matters: `INVALID_REQUEST` and `invalid_request` differ).
    pub fn find(name: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|code| code.as_str() == name)
    }
}

/// Defines [`Variant`]: other fixed texts (and, rarely, statuses) the vendor sends with a catalogued code.
macro_rules! variants {
    ($($variant:ident => $code:ident, $status:literal, $text:literal;)*) => {
        /// A fixed text other than the canonical one, sent with a catalogued code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Variant {
            $($variant,)*
        }

        impl Variant {
            pub const ALL: &'static [Variant] = &[$(Variant::$variant,)*];

            pub const fn code(self) -> Code {
                match self {
                    $(Variant::$variant => Code::$code,)*
                }
            }

            pub fn status(self) -> StatusCode {
                let status: u16 = match self {
                    $(Variant::$variant => $status,)*
                };
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }

            pub const fn text(self) -> &'static str {
                match self {
                    $(Variant::$variant => $text,)*
                }
            }
        }
    };
}

variants! {
    ScopeOfAccessToken => InsufficientScope, 401,
        "The request requires higher privileges than provided by the access token";
    // A body that is not valid HTTP framing (a bad chunk size, a client gone mid-body) [crmchat].
    MalformedBody => InvalidRequest, 400, "Malformed request body";
    DeniedJoinChat => AccessDenied, 403, "Access denied! You don't have access to join user to chat";
    // Sic: the reference's text has no apostrophe.
    DeniedThisAction => AccessDenied, 403, "Access denied! You dont have access to this action";
    DeniedUserEntity => AccessDenied, 403, "Access denied! User dont have access to this entity";
    DeniedTargetEntity => AccessDenied, 403,
        "Access denied! This user does not have access to the chat because he does not have access to this CRM entity";
    DeniedTargetHistory => AccessDenied, 403,
        "Access denied! This user does not have access to the chat because he does not have access to this view chat history";
    DeniedOfflineBinding => AccessDenied, 403,
        "Access denied! Offline events binding requires administrator access rights";
    DeniedAuthTypeBinding => AccessDenied, 403,
        "Access denied! Event binding with AUTH_TYPE requires administrator access rights";
    DeniedOfflineUnbinding => AccessDenied, 403,
        "Access denied! Offline events unbinding requires administrator access rights";
    DeniedAuthTypeUnbinding => AccessDenied, 403,
        "Access denied! Event unbinding with AUTH_TYPE requires administrator access rights";
    // `event.bind` of an offline handler for an event that allows none (`ONOFFLINEEVENT`); no `argument` key.
    OfflineNotAllowed => Argument, 400, "Offline event cannot be registered for this event.";
    // `imopenlines.crm.chat.getLastId` folds every other failure into this one answer.
    CrmEntityNotFound => CrmChatEmptyCrmData, 400, "Could not find CRM entity";
    CoreBindingInProgress => Core, 400, "Unable to set event handler: Process of binding the handler has already started";
    InvalidRefreshToken => OauthInvalidGrant, 400, "Invalid refresh token";
    UnsupportedGrantType => OauthInvalidRequest, 400, "Unsupported grant_type";
}

/// An error as it goes on the wire: a catalogued code, its status and text.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    code: Code,
    status: StatusCode,
    description: Cow<'static, str>,
    /// Extra top-level key of the error body (`argument` for `ERROR_ARGUMENT`).
    argument: Option<String>,
}

impl From<Code> for ApiError {
    fn from(code: Code) -> Self {
        Self { code, status: code.status(), description: Cow::Borrowed(code.text()), argument: None }
    }
}

impl From<Variant> for ApiError {
    fn from(variant: Variant) -> Self {
        Self {
            code: variant.code(),
            status: variant.status(),
            description: Cow::Borrowed(variant.text()),
            argument: None,
        }
    }
}

impl ApiError {
    pub fn code(&self) -> Code {
        self.code
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// `ERROR_ARGUMENT` for an argument of the wrong type.
    pub fn argument_invalid_type(name: &str) -> Self {
        Self::argument(name, format!("The value of an argument '{name}' has an invalid type"))
    }

    /// `ERROR_ARGUMENT` for a missing argument.
    pub fn argument_null_or_empty(name: &str) -> Self {
        Self::argument(name, format!("Argument '{name}' is null or empty"))
    }

    fn argument(name: &str, description: String) -> Self {
        Self {
            code: Code::Argument,
            status: Code::Argument.status(),
            description: Cow::Owned(description),
            argument: Some(name.to_string()),
        }
    }

    /// `ERROR_ARGUMENT` for an argument whose value the vendor refuses with a fixed text (`event_type`'s
    /// "Value must be one of {online|offline}").
    pub fn argument_refused(name: &str, text: &str) -> Self {
        Self::argument(name, text.to_string())
    }

    /// `ERROR_ARGUMENT` for parameters that could not be read at all (invalid JSON, too deep, too many)
    /// [crmchat]: `detail` says what was wrong; there is no `argument` key.
    pub fn unreadable_params(detail: impl std::fmt::Display) -> Self {
        Self::with_detail(Code::Argument, detail.to_string())
    }

    /// `ERROR_ARGUMENT` raised by the vendor's `RestException` (a filter or an order it refuses): the text
    /// names the culprit, and there is no `argument` key.
    pub fn argument_rest(text: String) -> Self {
        Self::with_detail(Code::Argument, text)
    }

    /// `invalid_request` of the token endpoint for a missing parameter.
    pub fn oauth_missing_parameter(name: &str) -> Self {
        Self::with_detail(Code::OauthInvalidRequest, format!("Missing parameter: {name}"))
    }

    /// `invalid_request` of the token endpoint for parameters that could not be read.
    pub fn oauth_unreadable_params(detail: impl std::fmt::Display) -> Self {
        Self::with_detail(Code::OauthInvalidRequest, detail.to_string())
    }

    /// REST 3.0's answer for a method it does not have: every method on `/rest/api/...`, since crmchat's methods
    /// all belong to REST 2.
    pub fn v3_method_not_found(method: &str) -> Self {
        Self::with_detail(Code::V3MethodNotFound, Code::V3MethodNotFound.text().replace("#METHOD#", method))
    }

    /// The same error sent with another status (a fault rule's `http_status`).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    fn with_detail(code: Code, description: String) -> Self {
        Self { code, status: code.status(), description: Cow::Owned(description), argument: None }
    }

    /// The vendor's body: `{"error", "error_description"}` plus `argument` when there is one.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code.as_str()));
        body.insert("error_description".into(), json!(self.description));
        if let Some(argument) = &self.argument {
            body.insert("argument".into(), json!(argument));
        }
        Value::Object(body)
    }
}

impl ApiError {
    /// REST 3.0's body: `{"error": {"code", "message"}}`.
    pub fn v3_body(&self) -> Value {
        json!({"error": {"code": self.code.as_str(), "message": self.description}})
    }
}

static STORE_FAULT_LOG: [crate::log_throttle::LogThrottle; 3] =
    [const { crate::log_throttle::LogThrottle::new(std::time::Duration::from_secs(10)) }; 3];

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        // Storage faults are logged with context and never shown: no SQL text reaches a client. A fault that
        // lasts (a full disk, a database that is down) hits every call: told once every 10 s per kind.
        let throttle = match err {
            crate::store::StoreError::DiskFull(_) => &STORE_FAULT_LOG[0],
            crate::store::StoreError::Database(_) => &STORE_FAULT_LOG[1],
            _ => &STORE_FAULT_LOG[2],
        };
        if let Some(held_back) = throttle.allow() {
            tracing::error!(error = %err, similar_lines_held_back = held_back, "storage fault");
        }
        Code::InternalServerError.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_code_is_listed_once() {
        let names: HashSet<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Code::ALL.len(), "a code string appears twice");
        for code in Code::ALL {
            assert_eq!(Code::find(code.as_str()), Some(*code));
            assert!(!code.text().is_empty());
            assert!(code.status().is_client_error() || code.status().is_server_error(), "{code:?} is never a 2xx");
        }
        assert_eq!(Code::find("invalid_request"), Some(Code::OauthInvalidRequest));
        assert_eq!(Code::find("INVALID_REQUEST"), Some(Code::InvalidRequest));
        assert_eq!(Code::find("query_limit_exceeded"), None, "lookup is case-sensitive");
    }

    #[test]
    fn variants_are_distinct_texts_of_their_codes() {
        let mut texts: HashSet<(Code, &str)> = Code::ALL.iter().map(|c| (*c, c.text())).collect();
        for variant in Variant::ALL {
            assert!(texts.insert((variant.code(), variant.text())), "{variant:?} repeats a text");
            assert!(variant.status().is_client_error() || variant.status().is_server_error());
        }
        for variant in Variant::ALL.iter().filter(|v| v.code() == Code::AccessDenied) {
            assert!(variant.text().starts_with("Access denied! "), "{variant:?}");
        }
    }

    #[test]
    fn bodies_are_the_vendors() {
        assert_eq!(
            ApiError::from(Code::QueryLimitExceeded).body().to_string(),
            r#"{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}"#
        );
        let err = ApiError::argument_null_or_empty("CRM_ENTITY");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            err.body().to_string(),
            r#"{"error":"ERROR_ARGUMENT","error_description":"Argument 'CRM_ENTITY' is null or empty","argument":"CRM_ENTITY"}"#
        );
        let err = ApiError::v3_method_not_found("server.time");
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            err.v3_body().to_string(),
            r#"{"error":{"code":"BITRIX_REST_V3_EXCEPTION_METHODNOTFOUNDEXCEPTION","message":"Method \"server.time\" was not found."}}"#
        );
        let err = ApiError::from(Variant::MalformedBody);
        assert_eq!((err.status(), err.code().as_str()), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
    }

    /// The type leaves no other way to an `ApiError` than a `Code`, a `Variant` or a named constructor here;
    /// this also keeps the code strings themselves out of every other source file (no matching on text).
    #[test]
    fn methods_and_protocol_use_the_catalogue() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let root_file = root.join("error.rs");
        let mut stack = vec![root];
        let mut checked = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") || path == root_file {
                    continue;
                }
                let source = std::fs::read_to_string(&path).unwrap();
                // Unit tests may name codes: they check what goes on the wire.
                let source = source.split("#[cfg(test)]").next().unwrap_or_default();
                checked += 1;
                for code in Code::ALL {
                    let quoted = format!("\"{}\"", code.as_str());
                    let by_hand = source.lines().find(|l| l.contains(&quoted) && !l.trim_start().starts_with("//"));
                    assert!(by_hand.is_none(), "{}: spells {} itself: {by_hand:?}", path.display(), code.as_str());
                }
            }
        }
        assert!(checked > 10, "the sources were found");
    }
}
