//! Service-account tokens: JWTs (ES256) signed with the cluster's service-account key, as
//! Kubernetes' TokenRequest issues them, and their verification by the authenticator.

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::ECDSA_P256_SHA256_FIXED;
use ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
use ring::signature::EcdsaKeyPair;
use ring::signature::KeyPair;
use ring::signature::UnparsedPublicKey;
use serde::Deserialize;
use serde::Serialize;

/// The issuer and default audience of every token.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

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
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenSigner {
    /// A signer from the PKCS#8 PEM key in the cluster credentials.
    pub fn from_pem(pem: &str) -> Result<TokenSigner, TokenError> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| TokenError::Key(e.to_string()))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(TokenSigner { key, rng })
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
        let header = b64(br#"{"alg":"ES256","typ":"JWT"}"#);
        let payload = b64(&serde_json::to_vec(&claims).map_err(|_| TokenError::Malformed)?);
        let signed = format!("{header}.{payload}");
        let signature = self.key.sign(&self.rng, signed.as_bytes()).map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(format!("{signed}.{}", b64(signature.as_ref())))
    }

    /// The service account `token` speaks for, if it is ours, unexpired at `now` and meant for
    /// this API server.
    pub fn verify(&self, token: &str, now: i64) -> Result<ServiceAccountRef, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode =
            |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed);
        let signature = decode(signature)?;
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref());
        public.verify(format!("{header}.{payload}").as_bytes(), &signature).map_err(|_| TokenError::Signature)?;
        let claims: Claims = serde_json::from_slice(&decode(payload)?).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now || claims.nbf > now + 60 {
            return Err(TokenError::Expired);
        }
        if claims.iss != ISSUER || !claims.aud.iter().any(|a| a == ISSUER) {
            return Err(TokenError::Audience);
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
    use super::*;
    use crate::pki::ClusterCredentials;

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
}
