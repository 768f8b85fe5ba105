//! Who an HTTP call was made for, from its `Authorization` header, which is
//! never recorded itself:
//!
//! - a JWT bearer token: its claims (`sub`, `email`, `preferred_username`,
//!   `client_id` or `azp`, `scope`, `iss`, `exp`). The signature is **not
//!   verified** (mcptap has no keys): the event says so.
//! - any other bearer token (opaque): a keyed fingerprint (HMAC-SHA256
//!   under a key of this host's, kept in the state directory), so that calls
//!   can be grouped per credential without the credential being derivable.
//! - Basic: the user name (the password is dropped).
//!
//! Claim values are masked like payloads (a claim could hold a secret).

use std::{fs, io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use base64::Engine;
use ring::{hmac, rand::SecureRandom};
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::{mask, protocol::http::Credential};

/// Longest claim value kept (longer ones are cut).
const MAX_CLAIM: usize = 256;

/// How the identity was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A JWT's claims, unverified.
    Jwt,
    /// An opaque bearer token's fingerprint.
    BearerToken,
    /// HTTP Basic's user name.
    Basic,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Jwt => "jwt",
            Source::BearerToken => "bearer_token",
            Source::Basic => "basic",
        }
    }
}

/// The identity of an HTTP call's credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// `sub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `preferred_username`, or Basic's user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `client_id`, else `azp`: the OAuth client the token was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `exp`, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// Whether the credential was verified: never (mcptap holds no keys).
    /// Present for JWTs, whose claims anyone can write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// Opaque tokens: `hmac-sha256:` and 16 hex digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl Identity {
    /// One name for the user, for metrics, the policy and the dashboard:
    /// the e-mail, else the user name, else the subject, else the client,
    /// else the token's fingerprint.
    pub fn display(&self) -> Option<&str> {
        self.email
            .as_deref()
            .or(self.name.as_deref())
            .or(self.id.as_deref())
            .or(self.client_id.as_deref())
            .or(self.fingerprint.as_deref())
    }
}

/// The user a call was made for: its credential's identity, else the
/// client process's owner. The one rule, for the operation record (policy,
/// metrics, inventory) and the stored event (dashboard).
pub fn user_of<'a>(identity: Option<&'a Identity>, process_user: Option<&'a str>) -> Option<&'a str> {
    identity.and_then(Identity::display).or(process_user)
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read or create the identity key {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the identity key {0} is not 32 bytes")]
    Size(String),
    #[error("no randomness for the identity key")]
    Random,
}

/// Derives identities; holds the fingerprint key.
pub struct Identifier {
    key: hmac::Key,
}

impl Identifier {
    /// The key kept at `path` (created, mode 0600, on first use), so that
    /// fingerprints stay the same across restarts.
    pub fn from_file(path: &Path) -> Result<Identifier, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = [0u8; 32];
                ring::rand::SystemRandom::new()
                    .fill(&mut b)
                    .map_err(|_| KeyError::Random)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                f.write_all(&b).map_err(io)?;
                b.to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        if bytes.len() != 32 {
            return Err(KeyError::Size(path.display().to_string()));
        }
        Ok(Identifier::with_key(&bytes))
    }

    /// A key of this run only (no state directory): fingerprints change
    /// across restarts.
    pub fn ephemeral() -> Result<Identifier, KeyError> {
        let mut b = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| KeyError::Random)?;
        Ok(Identifier::with_key(&b))
    }

    pub fn with_key(key: &[u8]) -> Identifier {
        Identifier {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The identity of an `Authorization` header's value; `None` for
    /// schemes that name no one (or an empty credential).
    pub fn identify(&self, credential: &Credential) -> Option<Identity> {
        let value = credential.expose().trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if rest.is_empty() {
            return None;
        }
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => Some(jwt_claims(rest).unwrap_or_else(|| Identity {
                source: Some(Source::BearerToken),
                fingerprint: Some(self.fingerprint(rest)),
                ..Identity::default()
            })),
            "basic" => basic_user(rest).map(|name| Identity {
                source: Some(Source::Basic),
                name: Some(name),
                ..Identity::default()
            }),
            _ => None,
        }
    }

    fn fingerprint(&self, token: &str) -> String {
        let tag = hmac::sign(&self.key, token.as_bytes());
        let hex: String = tag.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("hmac-sha256:{hex}")
    }
}

/// A JWT's claims: three base64url parts, the middle one a JSON object.
fn jwt_claims(token: &str) -> Option<Identity> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Value = serde_json::from_slice(&engine.decode(header.trim_end_matches('=')).ok()?).ok()?;
    header.get("alg")?;
    let claims: Value = serde_json::from_slice(&engine.decode(payload.trim_end_matches('=')).ok()?).ok()?;
    let claims = claims.as_object()?;
    let text = |name: &str| -> Option<String> {
        let v = claims.get(name)?;
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let mut s = mask::mask_text(&s).into_owned();
        if s.len() > MAX_CLAIM {
            let mut end = MAX_CLAIM;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        Some(s)
    };
    Some(Identity {
        source: Some(Source::Jwt),
        id: text("sub"),
        name: text("preferred_username"),
        email: text("email"),
        client_id: text("client_id").or_else(|| text("azp")),
        scope: text("scope").or_else(|| text("scp")),
        issuer: text("iss"),
        expires: claims.get("exp").and_then(Value::as_i64),
        verified: Some(false),
        fingerprint: None,
    })
}

/// Basic's user name (`user:password`, base64).
fn basic_user(encoded: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    (!user.is_empty()).then(|| mask::mask_text(user).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.c2lnbmF0dXJl",
            e.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            e.encode(claims.to_string())
        )
    }

    fn id() -> Identifier {
        Identifier::with_key(&[7; 32])
    }

    fn cred(s: &str) -> Credential {
        Credential::new(s.to_string())
    }

    #[test]
    fn jwt_claims_are_read_and_marked_unverified() {
        let token = jwt(serde_json::json!({
            "sub": "u-42", "email": "ada@example.com", "preferred_username": "ada",
            "azp": "cursor", "scope": "mcp:tools read", "iss": "https://idp.example.com", "exp": 1_900_000_000
        }));
        let i = id().identify(&cred(&format!("Bearer {token}"))).expect("identity");
        assert_eq!(i.source, Some(Source::Jwt));
        assert_eq!(i.id.as_deref(), Some("u-42"));
        assert_eq!(i.email.as_deref(), Some("ada@example.com"));
        assert_eq!(i.name.as_deref(), Some("ada"));
        assert_eq!(i.client_id.as_deref(), Some("cursor"));
        assert_eq!(i.scope.as_deref(), Some("mcp:tools read"));
        assert_eq!(i.issuer.as_deref(), Some("https://idp.example.com"));
        assert_eq!(i.expires, Some(1_900_000_000));
        assert_eq!(i.verified, Some(false));
        assert_eq!(i.display(), Some("ada@example.com"));
        let json = serde_json::to_string(&i).expect("json");
        assert!(!json.contains(&token), "{json}");
    }

    #[test]
    fn opaque_tokens_get_a_stable_keyed_fingerprint() {
        let a = id().identify(&cred("Bearer tok-aaaaaaaaaaaa")).expect("identity");
        let again = id().identify(&cred("bearer   tok-aaaaaaaaaaaa")).expect("identity");
        let b = id().identify(&cred("Bearer tok-bbbbbbbbbbbb")).expect("identity");
        let other_key = Identifier::with_key(&[8; 32])
            .identify(&cred("Bearer tok-aaaaaaaaaaaa"))
            .expect("identity");
        assert_eq!(a.source, Some(Source::BearerToken));
        assert_eq!(a.fingerprint, again.fingerprint);
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, other_key.fingerprint);
        let f = a.fingerprint.expect("fingerprint");
        assert!(f.starts_with("hmac-sha256:") && f.len() == 12 + 16, "{f}");
        assert!(!f.contains("tok-"));
    }

    #[test]
    fn basic_gives_the_user_name_only() {
        let i = id().identify(&cred("Basic YWxpY2U6czNjcmV0")).expect("identity"); // alice:s3cret
        assert_eq!(i.source, Some(Source::Basic));
        assert_eq!(i.name.as_deref(), Some("alice"));
        assert!(!serde_json::to_string(&i).expect("json").contains("s3cret"));
    }

    #[test]
    fn what_names_no_one_gives_nothing() {
        for v in [
            "",
            "Bearer",
            "Bearer   ",
            "Digest username=x",
            "Basic !!!",
            "Basic OnBhc3M=",
        ] {
            assert_eq!(id().identify(&cred(v)), None, "{v}");
        }
        // Three dots but not a JWT: an opaque token.
        let i = id().identify(&cred("Bearer a.b.c")).expect("identity");
        assert_eq!(i.source, Some(Source::BearerToken));
    }

    #[test]
    fn the_key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("identity.key");
        let one = Identifier::from_file(&path).expect("created");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let two = Identifier::from_file(&path).expect("reused");
        assert_eq!(one.fingerprint("t"), two.fingerprint("t"));
        fs::write(&path, b"short").expect("write");
        assert!(matches!(Identifier::from_file(&path), Err(KeyError::Size(_))));
    }
}
