//! Service-account tokens: JWTs (ES256) signed with the cluster's service-account key, as
//! Kubernetes' TokenRequest issues them, and their verification by the authenticator.
//!
//! Signing and verification go through `jsonwebtoken`; this module holds the claims, the
//! validation rules and the one table from its errors to [`TokenError`].

use jsonwebtoken::Algorithm;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::EncodingKey;
use jsonwebtoken::Header;
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use serde::Deserialize;
use serde::Serialize;

/// The issuer and default audience of every token.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// How long after `now` a token's `nbf` may lie and the token still count (clock skew
/// between the master that issued it and the one verifying it). `exp` has no such slack.
const NOT_BEFORE_LEEWAY: i64 = 60;

/// Why a token could not be issued or was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the service-account signing key is unusable: {0}")]
    Key(String),
    #[error("malformed token")]
    Malformed,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not for this API server")]
    Audience,
}

/// The one table from `jsonwebtoken`'s errors to ours.
fn token_error(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_) => TokenError::Malformed,
        // A header naming another algorithm (an HS256 token "signed" with our public key,
        // say) is a forgery like a bad signature.
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => TokenError::Signature,
        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => TokenError::Expired,
        ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer => TokenError::Audience,
        // The rest is about our key or the crypto provider, never about the token.
        _ => TokenError::Key(e.to_string()),
    }
}

/// The service account a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

#[derive(Serialize, Deserialize)]
struct KubernetesClaims {
    namespace: String,
    serviceaccount: NameUid,
}

#[derive(Serialize, Deserialize)]
struct NameUid {
    name: String,
    uid: String,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: i64,
    iat: i64,
    nbf: i64,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaims,
}

/// Signs and verifies tokens with one key.
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenSigner {
    /// A signer from the PKCS#8 PEM key in the cluster credentials (a P-256 key).
    pub fn from_pem(pem: &str) -> Result<TokenSigner, TokenError> {
        let key = |e: jsonwebtoken::errors::Error| TokenError::Key(e.to_string());
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(key)?;
        // The public half, derived from the same key (this also checks that it is P-256).
        let public = Jwk::from_encoding_key(&encoding, Algorithm::ES256).map_err(key)?;
        let decoding = DecodingKey::from_jwk(&public).map_err(key)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // jsonwebtoken checks exp and nbf against the system clock only; `verify` checks them
        // against the `now` it is given.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Ok(TokenSigner { encoding, decoding, validation })
    }

    /// A token for `account`, valid from `now` (Unix seconds) for `seconds`, for `audiences`
    /// (the API server's own when empty).
    pub fn issue(
        &self,
        account: &ServiceAccountRef,
        audiences: &[String],
        now: i64,
        seconds: i64,
    ) -> Result<String, TokenError> {
        let aud = if audiences.is_empty() { vec![ISSUER.to_string()] } else { audiences.to_vec() };
        let claims = Claims {
            iss: ISSUER.into(),
            sub: format!("system:serviceaccount:{}:{}", account.namespace, account.name),
            aud,
            exp: now + seconds,
            iat: now,
            nbf: now,
            kubernetes: KubernetesClaims {
                namespace: account.namespace.clone(),
                serviceaccount: NameUid { name: account.name.clone(), uid: account.uid.clone() },
            },
        };
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding).map_err(token_error)
    }

    /// The service account `token` speaks for, if it is ours, unexpired at `now` and meant for
    /// this API server. The signature is checked first: a forged token is `Signature` whatever
    /// its claims say. A genuine one is `Audience` unless its issuer and one of its audiences
    /// are [`ISSUER`], and `Expired` from its `exp` on (not a second later) or while its `nbf`
    /// is more than a minute after `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<ServiceAccountRef, TokenError> {
        let claims =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(token_error)?.claims;
        if claims.exp <= now || claims.nbf > now + NOT_BEFORE_LEEWAY {
            return Err(TokenError::Expired);
        }
        Ok(ServiceAccountRef {
            namespace: claims.kubernetes.namespace,
            name: claims.kubernetes.serviceaccount.name,
            uid: claims.kubernetes.serviceaccount.uid,
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::pki::ClusterCredentials;

    fn signer() -> TokenSigner {
        let creds = ClusterCredentials::generate().expect("credentials");
        TokenSigner::from_pem(&creds.service_account_key_pem).expect("signer")
    }

    fn robot() -> ServiceAccountRef {
        ServiceAccountRef { namespace: "team".into(), name: "robot".into(), uid: "u1".into() }
    }

    /// The three dot-separated parts of `token`.
    fn parts(token: &str) -> Vec<String> {
        token.split('.').map(String::from).collect()
    }

    #[test]
    fn an_issued_token_verifies_until_it_expires_and_a_tampered_one_never() {
        let creds = ClusterCredentials::generate().expect("credentials");
        let signer = TokenSigner::from_pem(&creds.service_account_key_pem).expect("signer");
        let account = ServiceAccountRef { namespace: "team".into(), name: "robot".into(), uid: "u1".into() };
        let token = signer.issue(&account, &[], 1_000, 3600).expect("token");
        assert_eq!(signer.verify(&token, 1_001).expect("valid"), account);
        assert!(matches!(signer.verify(&token, 4_600), Err(TokenError::Expired)));
        let mut tampered = token.clone();
        tampered.insert(tampered.find('.').expect("dot") + 2, 'x');
        assert!(signer.verify(&tampered, 1_001).is_err());
        let other =
            TokenSigner::from_pem(&ClusterCredentials::generate().expect("c").service_account_key_pem).expect("s");
        assert!(matches!(other.verify(&token, 1_001), Err(TokenError::Signature)));
        let elsewhere = signer.issue(&account, &["vault".into()], 1_000, 3600).expect("token");
        assert!(matches!(signer.verify(&elsewhere, 1_001), Err(TokenError::Audience)));
    }

    #[test]
    fn a_token_keeps_kubernetes_header_and_claims() {
        let token = signer().issue(&robot(), &[], 1_000, 3600).expect("token");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!((header.alg, header.typ.as_deref()), (Algorithm::ES256, Some("JWT")));
        let payload = URL_SAFE_NO_PAD.decode(&parts(&token)[1]).expect("base64");
        let claims: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": ISSUER,
                "sub": "system:serviceaccount:team:robot",
                "aud": [ISSUER],
                "exp": 4_600,
                "iat": 1_000,
                "nbf": 1_000,
                "kubernetes.io": {"namespace": "team", "serviceaccount": {"name": "robot", "uid": "u1"}},
            })
        );
    }

    /// A key and a token the hand-written ES256 signer (before jsonwebtoken) issued with it:
    /// header `{"alg":"ES256","typ":"JWT"}`, claims for team/robot (uid u1), iat 1000, exp 4600.
    const OLD_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgRj4BtiYah18W1kEd
7v/kJ6EIZYnMpz7QPFddcRHj9VOhRANCAAQ51HpEffcSV8+zQuWQQBV18BD3kofM
PEa2cNl3NRKdsXaXoALuyBZjOvMAbP3PVvVnj1vOvLlLwi5tgPXTkJvz
-----END PRIVATE KEY-----
";
    const OLD_TOKEN: &str = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMuZGVmYXVsdC5zdmMuY2x1c3Rlci5sb2NhbCIsInN1YiI6InN5c3RlbTpzZXJ2aWNlYWNjb3VudDp0ZWFtOnJvYm90IiwiYXVkIjpbImh0dHBzOi8va3ViZXJuZXRlcy5kZWZhdWx0LnN2Yy5jbHVzdGVyLmxvY2FsIl0sImV4cCI6NDYwMCwiaWF0IjoxMDAwLCJuYmYiOjEwMDAsImt1YmVybmV0ZXMuaW8iOnsibmFtZXNwYWNlIjoidGVhbSIsInNlcnZpY2VhY2NvdW50Ijp7Im5hbWUiOiJyb2JvdCIsInVpZCI6InUxIn19fQ.0N32b6BtxrCBC7YrStx4EvbQZpNsd1vDm3k0D57At9tCqqDoEdSOJyYh8UwTJNLFYKL11qXrPskUPU3h0gYNLQ";

    #[test]
    fn a_token_issued_by_the_hand_written_signer_still_verifies() {
        let signer = TokenSigner::from_pem(OLD_KEY).expect("signer");
        assert_eq!(signer.verify(OLD_TOKEN, 1_001).expect("valid"), robot());
        assert!(matches!(signer.verify(OLD_TOKEN, 4_600), Err(TokenError::Expired)));
    }

    #[test]
    fn a_token_with_a_forged_signature_is_refused() {
        let signer = signer();
        let token = signer.issue(&robot(), &[], 1_000, 3600).expect("token");
        let [header, payload, signature] = <[String; 3]>::try_from(parts(&token)).expect("three parts");

        tracing::info!("--- the claims changed to another account, the signature kept");
        let claims = URL_SAFE_NO_PAD.decode(&payload).expect("base64");
        let admin = String::from_utf8(claims).expect("utf-8").replace("\"team\"", "\"kube-system\"");
        let forged = format!("{header}.{}.{signature}", URL_SAFE_NO_PAD.encode(admin));
        assert!(matches!(signer.verify(&forged, 1_001), Err(TokenError::Signature)));

        tracing::info!("--- one bit of the signature flipped");
        let mut bytes = URL_SAFE_NO_PAD.decode(&signature).expect("base64");
        bytes[10] ^= 1;
        let flipped = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert!(matches!(signer.verify(&flipped, 1_001), Err(TokenError::Signature)));

        tracing::info!("--- a signature of the wrong length, and none at all");
        let short = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(&bytes[..40]));
        assert!(matches!(signer.verify(&short, 1_001), Err(TokenError::Signature)));
        assert!(matches!(signer.verify(&format!("{header}.{payload}."), 1_001), Err(TokenError::Signature)));

        tracing::info!("--- the same claims as HS256 with a guessable secret");
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&payload).expect("b64")).expect("json");
        let secret = EncodingKey::from_secret(b"guessable").expect("secret");
        let hs256 = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &secret).expect("hs256");
        assert!(matches!(signer.verify(&hs256, 1_001), Err(TokenError::Signature)));
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let token = signer().issue(&robot(), &[], 1_000, 3600).expect("token");
        assert!(matches!(signer().verify(&token, 1_001), Err(TokenError::Signature)));
    }

    #[test]
    fn a_token_is_refused_from_its_expiry_on_and_long_before_it_is_valid() {
        let signer = signer();
        let token = signer.issue(&robot(), &[], 1_000, 600).expect("token");
        assert!(signer.verify(&token, 1_599).is_ok(), "valid up to the second before exp");
        assert!(matches!(signer.verify(&token, 1_600), Err(TokenError::Expired)), "expired at exp");
        assert!(matches!(signer.verify(&token, 100_000), Err(TokenError::Expired)));
        assert!(signer.verify(&token, 940).is_ok(), "a minute of clock skew is forgiven");
        assert!(matches!(signer.verify(&token, 939), Err(TokenError::Expired)), "not valid yet");
    }

    #[test]
    fn a_token_for_another_audience_or_from_another_issuer_is_refused() {
        let signer = signer();
        let vault = signer.issue(&robot(), &["vault".into()], 1_000, 3600).expect("token");
        assert!(matches!(signer.verify(&vault, 1_001), Err(TokenError::Audience)));
        let both = signer.issue(&robot(), &["vault".into(), ISSUER.into()], 1_000, 3600).expect("token");
        assert_eq!(signer.verify(&both, 1_001).expect("one audience is ours"), robot());

        let token = signer.issue(&robot(), &[], 1_000, 3600).expect("token");
        let mut claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts(&token)[1]).expect("b64")).expect("json");
        claims.iss = "https://elsewhere.example".into();
        let elsewhere = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &signer.encoding).expect("jwt");
        assert!(matches!(signer.verify(&elsewhere, 1_001), Err(TokenError::Audience)));
    }

    #[test]
    fn a_token_that_is_not_a_jwt_is_malformed() {
        let signer = signer();
        for garbage in ["", "abc", "a.b", "a.b.c", "a.b.c.d", "!!.??.**"] {
            assert!(matches!(signer.verify(garbage, 1_001), Err(TokenError::Malformed)), "{garbage:?}");
        }
    }

    #[test]
    fn a_key_that_is_not_a_p256_pkcs8_key_is_refused() {
        assert!(matches!(TokenSigner::from_pem("not a key"), Err(TokenError::Key(_))));
    }
}
