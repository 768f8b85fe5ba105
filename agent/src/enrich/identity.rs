//! Who an HTTP call was made for, from its `Authorization` header, which is
//! never recorded itself:
//!
//! - a JWT bearer token: its claims (`sub`, `email`, `preferred_username`,
//!   `client_id` or `azp`, `scope`, `iss`, `exp`). Its signature is
//!   verified against the operator's keys (a JWKS file or URL,
//!   `[identity]` in the configuration file: [`JwtKeys`]), with its expiry,
//!   issuer and audience: `verified: true` only then. Without keys, or
//!   when the check fails (`alg: none`, a wrong key, expired), the claims
//!   are shown with `verified: false`: anyone can write them, and the
//!   policy does not take them for the user unless told to.
//! - any other bearer token (opaque): a keyed fingerprint (HMAC-SHA256
//!   under a key of this host's, kept in the state directory), so that calls
//!   can be grouped per credential without the credential being derivable.
//! - Basic: the user name (the password is dropped).
//!
//! Claim values are masked like payloads (a claim could hold a secret).

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

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
    /// Whether a JWT's signature, expiry, issuer and audience were checked
    /// against the operator's keys. Present for JWTs, whose claims anyone
    /// can write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// Opaque tokens: `hmac-sha256:` and 16 hex digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl Identity {
    /// Whether the identity rests on evidence rather than on what the
    /// caller wrote: a verified JWT, or an opaque token's fingerprint (only
    /// its holder produces it). Unverified JWT claims and Basic's user
    /// name (no password is checked) are claims.
    pub fn is_evidence(&self) -> bool {
        match self.source {
            Some(Source::Jwt) => self.verified == Some(true),
            Some(Source::BearerToken) => true,
            Some(Source::Basic) | None => false,
        }
    }

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
    #[error("the JWKS {0} is not usable: {1}")]
    Jwks(String, String),
}

/// `[identity]` of the configuration file: where the keys JWTs are
/// checked against come from, and what a token must say.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// A JWKS file (`{"keys": [...]}`), read at start.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL, fetched at start and every hour.
    pub jwks_url: Option<String>,
    /// Accepted `iss` values (any when empty).
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Accepted `aud` values (not checked when empty).
    #[serde(default)]
    pub audiences: Vec<String>,
}

/// The operator's keys for JWTs and what a token must say.
#[derive(Debug)]
pub struct JwtKeys {
    set: RwLock<jsonwebtoken::jwk::JwkSet>,
    issuers: Vec<String>,
    audiences: Vec<String>,
}

impl JwtKeys {
    pub fn new(config: &JwtConfig) -> Result<JwtKeys, KeyError> {
        let keys = JwtKeys {
            set: RwLock::new(jsonwebtoken::jwk::JwkSet { keys: Vec::new() }),
            issuers: config.issuers.clone(),
            audiences: config.audiences.clone(),
        };
        if let Some(path) = &config.jwks_file {
            let text = fs::read(path).map_err(|source| KeyError::Io {
                path: path.display().to_string(),
                source,
            })?;
            keys.replace(&text)
                .map_err(|e| KeyError::Jwks(path.display().to_string(), e))?;
        }
        Ok(keys)
    }

    /// Takes a JWKS document's keys in place of the current ones; returns
    /// how many.
    pub fn replace(&self, jwks: &[u8]) -> Result<usize, String> {
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(jwks).map_err(|e| e.to_string())?;
        let n = set.keys.len();
        if let Ok(mut current) = self.set.write() {
            *current = set;
        }
        Ok(n)
    }

    /// Checks a compact JWT: a key of the set that fits its header (by
    /// `kid`, else every key of its algorithm) verifies its signature, and
    /// its `exp`/`nbf`, issuer and audience hold.
    pub fn verify(&self, token: &str) -> Result<(), String> {
        use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
        // `alg: none` and unknown algorithms fail here.
        let header = decode_header(token).map_err(|e| e.to_string())?;
        let set = self.set.read().map_err(|_| "keys unavailable".to_string())?;
        let candidates: Vec<&jsonwebtoken::jwk::Jwk> = match &header.kid {
            Some(kid) => set.find(kid).into_iter().collect(),
            None => set.keys.iter().collect(),
        };
        if candidates.is_empty() {
            return Err("no key for this token".into());
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = 60;
        validation.validate_nbf = true;
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
        }
        if !self.issuers.is_empty() {
            validation.set_issuer(&self.issuers);
        }
        let mut last = String::from("no key fits");
        for jwk in candidates {
            // A key declared for another algorithm does not verify this one.
            if jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<jsonwebtoken::Algorithm>().ok())
                .is_some_and(|a| a != header.alg)
            {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
            match decode::<serde_json::Value>(token, &key, &validation) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

/// Fetches a JWKS URL into `keys` now and every hour, for the agent's
/// life; failures are logged (tokens stay unverified until a fetch works).
pub async fn refresh_jwks(url: String, keys: Arc<JwtKeys>) {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build();
    let Ok(client) = client else {
        tracing::warn!("cannot build an HTTP client for the JWKS: JWTs stay unverified");
        return;
    };
    loop {
        let fetched = async {
            let resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status()));
            }
            let body = resp.bytes().await.map_err(|e| e.to_string())?;
            if body.len() > 1 << 20 {
                return Err("larger than 1 MiB".into());
            }
            keys.replace(&body)
        }
        .await;
        match fetched {
            Ok(n) => tracing::info!(url, keys = n, "JWKS fetched"),
            Err(e) => tracing::warn!(
                url,
                "cannot fetch the JWKS ({e}): JWTs are not verified until it can be"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
}

/// Derives identities; holds the fingerprint key and the JWT keys.
pub struct Identifier {
    key: hmac::Key,
    jwt_keys: Option<Arc<JwtKeys>>,
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
            jwt_keys: None,
        }
    }

    /// JWTs are checked against these keys.
    pub fn with_jwt_keys(mut self, keys: Option<Arc<JwtKeys>>) -> Identifier {
        self.jwt_keys = keys;
        self
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
            "bearer" => Some(jwt_claims(rest, self.jwt_keys.as_deref()).unwrap_or_else(|| Identity {
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

/// A JWT's claims: three base64url parts, the middle one a JSON object;
/// verified when keys are given and one of them checks it.
fn jwt_claims(token: &str, keys: Option<&JwtKeys>) -> Option<Identity> {
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
        crate::protocol::bound::cut(&mut s, MAX_CLAIM);
        Some(s)
    };
    let verified = match keys.map(|k| k.verify(token)) {
        Some(Ok(())) => true,
        Some(Err(why)) => {
            tracing::debug!("a JWT did not verify: {why}");
            false
        }
        None => false,
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
        verified: Some(verified),
        fingerprint: None,
    })
}

/// Basic's user name (`user:password`, base64).
fn basic_user(encoded: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    (!user.is_empty()).then(|| crate::protocol::bound::cut_str(&mask::mask_text(user), MAX_CLAIM))
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
