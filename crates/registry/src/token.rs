//! The TokenRequest subresource of ServiceAccounts (`POST serviceaccounts/<name>/token`): what
//! is issued for whom and for how long. Signing is the caller's (the API server holds the key),
//! passed in as a function, so the registry holds no key material.

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authentication::v1::TokenRequestSpec;
use k8s_openapi::api::authentication::v1::TokenRequestStatus;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use trireme_model::kinds::ServiceAccounts;
use trireme_model::strategy::Kind;
use trireme_model::version::ReadAt;

use crate::registry::Registry;
use crate::registry::RegistryError;
use crate::typed::from_value;

/// The shortest and longest lifetimes a token may be asked for, in seconds (Kubernetes' minimum
/// of 10 minutes; at most a year).
pub const EXPIRATION_BOUNDS: (i64, i64) = (600, 86_400 * 365);
/// The lifetime of a token when none is asked for.
pub const DEFAULT_EXPIRATION: i64 = 3600;

/// What a signer is given: the account, the audiences, and the validity (Unix seconds).
pub struct TokenGrant<'a> {
    pub account: &'a ServiceAccount,
    pub audiences: &'a [String],
    pub issued_at: i64,
    pub seconds: i64,
}

impl Registry {
    /// Issues a token for the ServiceAccount at `namespace`/`name` as `request` asks
    /// (audiences, expirationSeconds clamped to [`EXPIRATION_BOUNDS`]); `sign` makes the token.
    /// `default_audience` is used when the request names none. A missing account is `NotFound`.
    pub async fn token_request(
        &self,
        namespace: &str,
        name: &str,
        request: TokenRequest,
        default_audience: &str,
        sign: impl FnOnce(&TokenGrant<'_>) -> Result<String, String>,
    ) -> Result<TokenRequest, RegistryError> {
        let stored = self.get(ServiceAccounts::RESOURCE, Some(namespace), name, ReadAt::Latest).await?;
        let account = from_value::<ServiceAccounts>(stored)?;
        let spec = request.spec;
        let seconds =
            spec.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION).clamp(EXPIRATION_BOUNDS.0, EXPIRATION_BOUNDS.1);
        let issued_at = Timestamp::now().as_second();
        let grant = TokenGrant { account: &account, audiences: &spec.audiences, issued_at, seconds };
        let token = sign(&grant).map_err(|e| RegistryError::Internal(format!("cannot sign a token: {e}")))?;
        let expires = Timestamp::from_second(issued_at.saturating_add(seconds)).unwrap_or(Timestamp::MAX);
        let audiences = if spec.audiences.is_empty() { vec![default_audience.to_string()] } else { spec.audiences };
        Ok(TokenRequest {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                creation_timestamp: Timestamp::from_second(issued_at).ok().map(Time),
                ..Default::default()
            },
            spec: TokenRequestSpec {
                audiences,
                expiration_seconds: Some(seconds),
                bound_object_ref: spec.bound_object_ref,
            },
            status: Some(TokenRequestStatus { token, expiration_timestamp: Time(expires) }),
        })
    }
}
