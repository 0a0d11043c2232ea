//! Bearer-token authentication for the HTTP front door.
//!
//! Tokens are configured as `name:token` (or `name:sha256:HEX`, so the server need not hold the
//! token itself), one per line or comma-separated; several may be valid at once, so a token is
//! rotated by adding the new one, moving clients, then removing the old. A presented token is
//! hashed and compared with every configured hash in constant time, without stopping at the
//! first match, so response timing says nothing about which prefix or entry came close.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub(crate) mod jwt;

/// The authenticated caller, put on each request by the HTTP authentication middleware for the
/// MCP handler to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal(pub(crate) String);

#[derive(Clone, Default)]
pub(crate) struct TokenSet {
    entries: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet({:?})", self.names())
    }
}

/// Shortest token accepted: 128 bits of hex, or the equivalent.
pub(crate) const MIN_TOKEN_LEN: usize = 32;

/// A configured token entry that cannot be used. Entries are named by position (and name),
/// never by their token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("entry {0}: expected name:token or name:sha256:HEX")]
    Shape(usize),
    #[error("entry {0}: the name must be letters, digits, - _ . @")]
    Name(usize),
    #[error("entry {0} ({1}): sha256 must be 64 hex digits")]
    Digest(usize, String),
    #[error("entry {0} ({1}): tokens must be at least {MIN_TOKEN_LEN} characters")]
    Short(usize, String),
    #[error("entry {0}: the name {1} is used twice")]
    Twice(usize, String),
}

impl TokenSet {
    /// Parses the configured entries. Errors name the entry by position, never its token.
    pub(crate) fn parse(text: &str) -> Result<TokenSet, TokenError> {
        let mut entries = Vec::new();
        for (i, raw) in text.split(['\n', ',']).enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let (name, rest) = line.split_once(':').ok_or(TokenError::Shape(n))?;
            let name = name.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
            {
                return Err(TokenError::Name(n));
            }
            let digest: [u8; 32] = match rest.strip_prefix("sha256:") {
                Some(hex_digest) => hex::decode(hex_digest.trim())
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| TokenError::Digest(n, name.to_string()))?,
                None => {
                    if rest.len() < MIN_TOKEN_LEN {
                        return Err(TokenError::Short(n, name.to_string()));
                    }
                    Sha256::digest(rest.as_bytes()).into()
                }
            };
            if entries.iter().any(|(n, _)| n == name) {
                return Err(TokenError::Twice(n, name.to_string()));
            }
            entries.push((name.to_string(), digest));
        }
        Ok(TokenSet { entries })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.entries.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The principal a presented token belongs to, compared in constant time against all.
    pub(crate) fn authenticate(&self, presented: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&str> = None;
        for (name, expected) in &self.entries {
            let hit: bool = digest.ct_eq(expected).into();
            if hit && found.is_none() {
                found = Some(name);
            }
        }
        found.map(|n| Principal(n.to_string()))
    }
}

/// The token in an `Authorization: Bearer …` header value.
pub(crate) fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A fresh 256-bit token, hex encoded (development mode).
pub(crate) fn generate_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef-alice";
    const B: &str = "fedcba9876543210fedcba9876543210-bob";

    #[test]
    fn plain_and_hashed_tokens() {
        let hashed = hex::encode(Sha256::digest(B.as_bytes()));
        let set = TokenSet::parse(&format!("alice:{A}\n# comment\nbob:sha256:{hashed}")).unwrap();
        assert_eq!(set.authenticate(A), Some(Principal("alice".into())));
        assert_eq!(set.authenticate(B), Some(Principal("bob".into())));
        assert_eq!(set.authenticate("wrong"), None);
        assert_eq!(set.authenticate(&A[..A.len() - 1]), None);
        assert_eq!(set.names(), vec!["alice", "bob"]);
    }

    #[test]
    fn bad_entries_are_refused_without_echoing_tokens() {
        for bad in [
            "noseparator",
            "alice:short",
            "a b:0123456789abcdef0123456789abcdef",
            "x:sha256:zz",
        ] {
            let err = TokenSet::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("0123456789abcdef"), "{err}");
        }
        assert!(
            TokenSet::parse(&format!("a:{A},a:{B}")).is_err(),
            "duplicate names"
        );
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn generated_tokens_are_long_and_distinct() {
        let a = generate_token().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, generate_token().unwrap());
    }
}
