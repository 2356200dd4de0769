//! The one table from registry errors to Kubernetes `Status` responses. Every error the API
//! server returns is built here, so kubectl always gets a Status body it can print.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use serde_json::Value;
use serde_json::json;
use trireme_registry::RegistryError;
use trireme_store::StoreError;

/// A failed request: HTTP code, Kubernetes reason, message and details.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl Failure {
    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure { code: StatusCode::BAD_REQUEST, reason: "BadRequest", message: message.into(), details: None }
    }

    /// 404 NotFound for a path nothing is served at.
    pub fn no_route() -> Failure {
        Failure {
            code: StatusCode::NOT_FOUND,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: None,
        }
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Failure {
        Failure {
            code: StatusCode::UNAUTHORIZED,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
            details: None,
        }
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Failure {
        Failure {
            code: StatusCode::METHOD_NOT_ALLOWED,
            reason: "MethodNotAllowed",
            message: message.into(),
            details: None,
        }
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Failure {
        Failure {
            code: StatusCode::PAYLOAD_TOO_LARGE,
            reason: "RequestEntityTooLarge",
            message: format!("Request entity too large: limit is {limit}"),
            details: None,
        }
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media(content_type: &str) -> Failure {
        Failure {
            code: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reason: "UnsupportedMediaType",
            message: format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; got {content_type}"
            ),
            details: None,
        }
    }

    /// The Status object.
    pub fn body(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        (self.code, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Failure {
        let message = e.to_string();
        let (code, reason, details) = match &e {
            RegistryError::NotFound { resource, name } => {
                (StatusCode::NOT_FOUND, "NotFound", Some(details(resource, name)))
            }
            RegistryError::AlreadyExists { resource, name } => {
                (StatusCode::CONFLICT, "AlreadyExists", Some(details(resource, name)))
            }
            RegistryError::Conflict { resource, name, .. } => {
                (StatusCode::CONFLICT, "Conflict", Some(details(resource, name)))
            }
            RegistryError::Invalid { kind, name, causes } => {
                let (group, kind) = match kind.split_once('.') {
                    Some((k, g)) => (g.to_string(), k.to_string()),
                    None => (String::new(), kind.clone()),
                };
                let details = json!({"name": name, "group": group, "kind": kind, "causes": causes});
                (StatusCode::UNPROCESSABLE_ENTITY, "Invalid", Some(details))
            }
            RegistryError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest", None),
            RegistryError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden", None),
            RegistryError::Expired(_) => (StatusCode::GONE, "Expired", None),
            RegistryError::TooLargeResourceVersion { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                Some(
                    json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
                ),
            ),
            RegistryError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", None),
            RegistryError::Store(store) => return store_failure(store),
            RegistryError::Corrupt(_) | RegistryError::Exhausted(_) | RegistryError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalError", None)
            }
        };
        Failure { code, reason, message, details }
    }
}

fn details(resource: &str, name: &str) -> Value {
    let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
    json!({"name": name, "group": group, "kind": kind})
}

/// Store failures: unavailability is 503/504 so clients retry; anything else is a 500.
fn store_failure(e: &StoreError) -> Failure {
    let message = e.to_string();
    let (code, reason) = match e {
        StoreError::NoLeader | StoreError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
        StoreError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
        StoreError::Compacted { .. } => (StatusCode::GONE, "Expired"),
        StoreError::RequestTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
        StoreError::Fenced { .. } => (StatusCode::CONFLICT, "Conflict"),
        // The registry checks revisions and request shapes before the store sees them, and uses
        // neither leases nor membership: any of these reaching a client is a server bug, and
        // local storage or Raft failing is the server's too.
        StoreError::FutureRevision { .. }
        | StoreError::InvalidArgument(_)
        | StoreError::KeyNotFound
        | StoreError::LeaseNotFound
        | StoreError::LeaseExists
        | StoreError::LeaseTtlTooLarge
        | StoreError::DuplicateKey
        | StoreError::TooManyOps
        | StoreError::MemberNotFound
        | StoreError::MemberExists
        | StoreError::InvalidMembership(_)
        | StoreError::Io(_)
        | StoreError::Raft(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    };
    let details = matches!(code, StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT)
        .then(|| json!({"retryAfterSeconds": 1}));
    Failure { code, reason, message, details }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_reads_as_kubectl_expects() {
        let f = Failure::from(RegistryError::NotFound { resource: "pods".into(), name: "nope".into() });
        assert_eq!(f.code, StatusCode::NOT_FOUND);
        let body = f.body();
        assert_eq!(body["message"], "pods \"nope\" not found");
        assert_eq!(body["reason"], "NotFound");
        assert_eq!(body["details"]["kind"], "pods");
    }

    #[test]
    fn invalid_carries_causes_and_the_group() {
        let causes = vec![trireme_model::field::FieldError::required("spec.template.spec.containers[0].image")];
        let f = Failure::from(RegistryError::Invalid { kind: "Deployment.apps".into(), name: "web".into(), causes });
        let body = f.body();
        assert_eq!(body["code"], 422);
        assert_eq!(body["details"]["group"], "apps");
        assert_eq!(body["details"]["causes"][0]["reason"], "FieldValueRequired");
        assert_eq!(
            body["message"],
            "Deployment.apps \"web\" is invalid: spec.template.spec.containers[0].image: Required value"
        );
    }
}
