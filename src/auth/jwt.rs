//! OAuth resource-server mode (as the MCP authorization spec asks of hosted servers): bearer
//! JWTs issued by an authorization server are accepted when their signature verifies with a
//! configured key (a JWKS file or a PEM public key) and their issuer, audience and expiry are
//! right. The key decides the algorithm, so a token cannot pick a weaker one (`alg: none`, or
//! HMAC keyed with a public key). The caller's token is never passed on to anything.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use super::Principal;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

pub(crate) struct JwtVerifier {
    keys: Vec<Key>,
    issuer: String,
    audience: String,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

/// Why a token was refused, for the `WWW-Authenticate` error description (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Expired,
    WrongIssuerOrAudience,
    BadSignature,
    Malformed,
}

impl Refusal {
    pub(crate) fn description(&self) -> &'static str {
        match self {
            Refusal::Expired => "the token has expired",
            Refusal::WrongIssuerOrAudience => "the token was not issued for this resource",
            Refusal::BadSignature => "the token's signature does not verify",
            Refusal::Malformed => "the token is not a valid JWT",
        }
    }
}

/// A verification key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an RSA, EC (P-256) or Ed25519 public key in PEM", path.display())]
    NotAKey { path: PathBuf },
    #[error("{}: not a JWKS: {source}", path.display())]
    NotAJwks {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {source}", path.display())]
    Jwk {
        path: PathBuf,
        source: jsonwebtoken::errors::Error,
    },
    #[error("no usable public key: set TERRARIUM_JWT_JWKS_FILE or TERRARIUM_JWT_PUBLIC_KEY_FILE")]
    NoKey,
}

fn pem_key(pem: &[u8]) -> Option<(DecodingKey, Algorithm)> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Some((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Some((k, Algorithm::ES256));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Some((k, Algorithm::EdDSA));
    }
    None
}

impl JwtVerifier {
    pub(crate) fn new(
        issuer: &str,
        audience: &str,
        jwks_file: Option<&Path>,
        pem_file: Option<&Path>,
    ) -> Result<JwtVerifier, KeyError> {
        let mut keys = Vec::new();
        let read = |path: &Path, source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        if let Some(path) = pem_file {
            let pem = std::fs::read(path).map_err(|e| read(path, e))?;
            let (key, alg) = pem_key(&pem).ok_or_else(|| KeyError::NotAKey {
                path: path.to_path_buf(),
            })?;
            keys.push(Key {
                kid: None,
                alg,
                key,
            });
        }
        if let Some(path) = jwks_file {
            let text = std::fs::read_to_string(path).map_err(|e| read(path, e))?;
            let set: JwkSet = serde_json::from_str(&text).map_err(|source| KeyError::NotAJwks {
                path: path.to_path_buf(),
                source,
            })?;
            for jwk in &set.keys {
                let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                    (AlgorithmParameters::RSA(_), _) => Algorithm::RS256,
                    (AlgorithmParameters::EllipticCurve(_), _) => Algorithm::ES256,
                    (AlgorithmParameters::OctetKeyPair(_), _) => Algorithm::EdDSA,
                    // Symmetric keys would let anyone who can read the JWKS mint tokens.
                    (AlgorithmParameters::OctetKey(_), _) => continue,
                };
                let key = DecodingKey::from_jwk(jwk).map_err(|source| KeyError::Jwk {
                    path: path.to_path_buf(),
                    source,
                })?;
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key,
                });
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoKey);
        }
        Ok(JwtVerifier {
            keys,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        })
    }

    pub(crate) fn verify(&self, token: &str) -> Result<Principal, Refusal> {
        let header = decode_header(token).map_err(|_| Refusal::Malformed)?;
        let candidates = self.keys.iter().filter(|k| {
            k.alg == header.alg && (header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
        });
        let mut last = Refusal::BadSignature;
        for k in candidates {
            let mut v = Validation::new(k.alg);
            v.set_issuer(&[&self.issuer]);
            v.set_audience(&[&self.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            v.leeway = LEEWAY_SECS;
            v.validate_nbf = true;
            match decode::<Claims>(token, &k.key, &v) {
                Ok(data) if !data.claims.sub.is_empty() => return Ok(Principal(data.claims.sub)),
                Ok(_) => last = Refusal::Malformed,
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match e.kind() {
                        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                            Refusal::Expired
                        }
                        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                            Refusal::WrongIssuerOrAudience
                        }
                        ErrorKind::InvalidSignature => Refusal::BadSignature,
                        _ => Refusal::Malformed,
                    };
                    if last != Refusal::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}
