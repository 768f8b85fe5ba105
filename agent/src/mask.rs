//! Secret masking: the one place that decides what looks like a secret.
//!
//! Used on everything that can hold one before it leaves the agent: command
//! lines, resource URIs, error messages and captured payloads. Two rules:
//! values under secret-looking names (flags, JSON keys, `KEY=value`) are
//! replaced whole, and known secret shapes (bearer tokens, provider API
//! keys, JWTs, private keys, URL credentials) are replaced wherever they
//! appear.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

pub const REDACTED: &str = "[REDACTED]";

/// Known secret shapes, with the label they are replaced by.
static SHAPES: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    let shapes: &[(&str, &str)] = &[
        (
            "private_key",
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
        ),
        ("jwt", r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
        ("bearer", r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*"),
        ("basic_auth", r"(?i)\bbasic\s+[A-Za-z0-9+/]{12,}=*"),
        ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{16,}"),
        ("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
        ("github_token", r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}"),
        ("github_token", r"\bgithub_pat_[A-Za-z0-9_]{22,}"),
        ("gitlab_token", r"\bglpat-[A-Za-z0-9_-]{20,}"),
        ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
        ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
        ("stripe_key", r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),
        ("huggingface_token", r"\bhf_[A-Za-z0-9]{30,}"),
        ("npm_token", r"\bnpm_[A-Za-z0-9]{36}"),
    ];
    shapes
        .iter()
        .map(|(label, re)| (*label, Regex::new(re).expect("valid built-in pattern")))
        .collect()
});

/// `scheme://user:password@` → password masked.
static URL_CREDENTIALS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@").expect("valid built-in pattern"));

/// `password=...`, `api_key: ...` inside free text or query strings, and
/// `"api_key": "..."` in JSON or YAML text carried inside a string (a
/// config file a tool returns; it may be cut short, so not always
/// parseable). Group 1 is kept; group 2, the value, is masked (its quotes
/// kept, so JSON text stays JSON); a value masked already is taken whole,
/// so masking twice changes nothing more.
static INLINE_ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b((?:[a-z0-9]+[_-])*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|client[_-]?secret|credentials?)["']?\s*[=:]\s*)("[^"]*"|'[^']*'|\[REDACTED\]|[^\s&'",;}\]]+)"#,
    )
    .expect("valid built-in pattern")
});

/// True for names whose values are secrets (JSON keys, flags, env vars).
pub fn is_secret_name(name: &str) -> bool {
    let n: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if n.is_empty() {
        return false;
    }
    // Counts of tokens (max_tokens, total_tokens) are not secrets.
    if n.ends_with("tokens") {
        return false;
    }
    const WORDS: &[&str] = &[
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "accesskey",
        "privatekey",
        "credential",
        "authorization",
        "cookie",
        "sessionid",
        "bearer",
        "signature",
    ];
    matches!(n.as_str(), "pwd" | "pass" | "auth" | "key") || WORDS.iter().any(|w| n.contains(w))
}

/// Masks known secret shapes and inline assignments in free text.
pub fn mask_text(s: &str) -> Cow<'_, str> {
    let mut out: Cow<'_, str> = Cow::Borrowed(s);
    for (label, re) in SHAPES.iter() {
        if re.is_match(&out) {
            out = Cow::Owned(
                re.replace_all(&out, format!("[REDACTED:{label}]").as_str())
                    .into_owned(),
            );
        }
    }
    if URL_CREDENTIALS.is_match(&out) {
        out = Cow::Owned(
            URL_CREDENTIALS
                .replace_all(&out, format!("${{1}}{REDACTED}@").as_str())
                .into_owned(),
        );
    }
    if INLINE_ASSIGNMENT.is_match(&out) {
        out = Cow::Owned(
            INLINE_ASSIGNMENT
                .replace_all(&out, |c: &regex::Captures<'_>| {
                    let value = &c[2];
                    let quote = match value.chars().next() {
                        Some(q @ ('"' | '\'')) => q.to_string(),
                        _ => String::new(),
                    };
                    format!("{}{quote}{REDACTED}{quote}", &c[1])
                })
                .into_owned(),
        );
    }
    out
}

/// The kinds of secret found in a text (`github_token`, `jwt`,
/// `url_credentials`, `inline_assignment`, ...), for reports that must say
/// what leaked without repeating it.
pub fn secret_kinds(s: &str) -> Vec<&'static str> {
    let mut kinds: Vec<&'static str> = SHAPES
        .iter()
        .filter(|(_, re)| re.is_match(s))
        .map(|(label, _)| *label)
        .collect();
    if URL_CREDENTIALS.is_match(s) {
        kinds.push("url_credentials");
    }
    if INLINE_ASSIGNMENT.is_match(s) {
        kinds.push("inline_assignment");
    }
    kinds.dedup();
    // `sk-ant-...` fits the OpenAI shape too; it is Anthropic's.
    if kinds.contains(&"anthropic_key") {
        kinds.retain(|k| *k != "openai_key");
    }
    kinds
}

/// Masks a command line: values of secret-named flags (`--token x`,
/// `--api-key=x`), secret-named `KEY=value` words, and secret shapes.
pub fn mask_cmdline(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut mask_next = false;
    for arg in args {
        if mask_next {
            out.push(REDACTED.to_string());
            mask_next = false;
            continue;
        }
        if let Some(flag) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|f| !f.is_empty())
        {
            if let Some((name, _)) = flag.split_once('=') {
                if is_secret_name(name) {
                    out.push(format!("{}={REDACTED}", &arg[..arg.len() - flag.len() + name.len()]));
                    continue;
                }
            } else if is_secret_name(flag) {
                out.push(arg.clone());
                mask_next = true;
                continue;
            }
        } else if let Some((name, _)) = arg.split_once('=')
            && !name.is_empty()
            && !name.contains(char::is_whitespace)
            && is_secret_name(name)
        {
            out.push(format!("{name}={REDACTED}"));
            continue;
        }
        out.push(mask_text(arg).into_owned());
    }
    out
}

/// Masks a JSON value in place: values under secret-named keys are
/// replaced whole; every string is checked for secret shapes.
pub fn mask_json(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if is_secret_name(key) && !value.is_null() {
                    *value = Value::String(REDACTED.into());
                } else {
                    mask_json(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        Value::String(s) => {
            if let Some(masked) = mask_embedded_json(s) {
                *s = masked;
            } else if let Cow::Owned(masked) = mask_text(s) {
                *s = masked;
            }
        }
        _ => {}
    }
}

/// A string that holds a whole JSON object or array (a tool that returns a
/// config file, a JSON-encoded result): masked as JSON, structure kept, and
/// written back compact. None when the string is not JSON, or nothing in
/// it needed masking.
fn mask_embedded_json(s: &str) -> Option<String> {
    let t = s.trim();
    if !(t.starts_with('{') && t.ends_with('}') || t.starts_with('[') && t.ends_with(']')) {
        return None;
    }
    let mut inner: Value = serde_json::from_str(t).ok()?;
    let before = inner.clone();
    mask_json(&mut inner);
    (inner != before).then(|| inner.to_string())
}

/// Replaced values: kept structure, no content.
pub const MASKED: &str = "[MASKED]";

/// Masks every scalar of a JSON value (keeping its structure), except the
/// values under `allow` keys, which only lose secret shapes.
pub fn mask_values_except(v: &mut Value, allow: &[String]) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if allow.iter().any(|a| a == key) && !is_secret_name(key) {
                    mask_json(value);
                } else {
                    mask_values_except(value, allow);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| mask_values_except(i, allow)),
        Value::Null => {}
        other => *other = Value::String(MASKED.into()),
    }
}

/// HTTP headers as a JSON object for payload capture: values of secret
/// headers (Authorization, Cookie, API keys, session ids...) replaced
/// whole, every other value checked for secret shapes.
pub fn mask_headers(headers: &[(String, String)]) -> Value {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let value = if is_secret_name(name) {
            REDACTED.to_string()
        } else {
            mask_text(value).into_owned()
        };
        map.insert(name.to_ascii_lowercase(), Value::String(value));
    }
    Value::Object(map)
}

/// Caps a JSON value's serialized size: a larger value is replaced by a
/// marker stating its size, so events stay bounded.
pub fn cap_json(v: Value, max_bytes: usize) -> Value {
    let len = serde_json::to_string(&v).map_or(usize::MAX, |s| s.len());
    if len <= max_bytes {
        v
    } else {
        serde_json::json!({ "mcptap.truncated": true, "bytes": len })
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn json_documents_inside_strings_are_masked() {
        // A tool that returns a config file, as a JSON string.
        let mut v = serde_json::json!({
            "content": [{"type": "text", "text": "{\"api_key\": \"abc123secret\", \"db\": {\"password\": \"hunter2\", \"host\": \"db1\"}}"}]
        });
        mask_json(&mut v);
        let text = v["content"][0]["text"].as_str().unwrap();
        assert!(!text.contains("abc123secret") && !text.contains("hunter2"), "{text}");
        let inner: Value = serde_json::from_str(text).expect("still JSON");
        assert_eq!(inner["api_key"], REDACTED);
        assert_eq!(inner["db"]["password"], REDACTED);
        assert_eq!(inner["db"]["host"], "db1");

        // Cut short (not parseable), or pretty-printed inside other text.
        let cut = r#"config: {"client_secret": "s3cr3tvalue", "token": "tok-123456", "name": "#;
        let masked = mask_text(cut);
        assert!(
            !masked.contains("s3cr3tvalue") && !masked.contains("tok-123456"),
            "{masked}"
        );
        assert!(masked.contains(r#""client_secret": "[REDACTED]""#), "{masked}");

        // YAML and INI shapes keep working.
        let yaml = "db:\n  password: hunter2\n  user: app\n";
        assert!(!mask_text(yaml).contains("hunter2"));
        assert!(mask_text(yaml).contains("user: app"));

        // Masking is idempotent (found by the `mask` fuzz target: a value
        // cut at `]` was masked again, growing a bracket each time).
        for text in [
            "pwd==\u{fffd}P\u{fffd}",
            "token: [x]",
            r#"{"api_key": "a]b"}"#,
            "secret=[REDACTED]",
        ] {
            let once = mask_text(text).into_owned();
            assert_eq!(mask_text(&once), once, "{text:?}");
        }

        // Strings that are JSON without secrets are left as they are.
        let mut plain = serde_json::json!({"text": "{\"a\": 1,  \"b\": [2]}"});
        mask_json(&mut plain);
        assert_eq!(plain["text"], "{\"a\": 1,  \"b\": [2]}");
    }

    #[test]
    fn policy_masking_keeps_only_allowed_keys() {
        let mut v = serde_json::json!({
            "repo": "acme/api", "path": "src/main.rs", "token": "abc",
            "nested": {"repo": "x", "n": 5, "list": ["a", true]},
            "note": "key sk-ant-abcdefghijklmnopqrstuvwxyz12"
        });
        mask_values_except(&mut v, &["repo".to_string(), "note".to_string(), "token".to_string()]);
        assert_eq!(v["repo"], "acme/api");
        assert_eq!(v["path"], MASKED);
        assert_eq!(v["token"], MASKED, "secret names are never allowed");
        assert_eq!(v["nested"]["repo"], "x");
        assert_eq!(v["nested"]["n"], MASKED);
        assert_eq!(v["nested"]["list"], serde_json::json!([MASKED, MASKED]));
        assert!(v["note"].as_str().unwrap().contains("[REDACTED:anthropic_key]"));
    }

    #[test]
    fn secret_headers_are_masked_whole() {
        let h = |n: &str, v: &str| (n.to_string(), v.to_string());
        let out = mask_headers(&[
            h("Authorization", "Bearer abcdefghijklmnop"),
            h("Cookie", "sid=1234"),
            h("X-Api-Key", "k-123"),
            h("Mcp-Session-Id", "3f1c"),
            h("Content-Type", "application/json"),
            h("X-Debug", "token=hunter2"),
        ]);
        assert_eq!(out["authorization"], REDACTED);
        assert_eq!(out["cookie"], REDACTED);
        assert_eq!(out["x-api-key"], REDACTED);
        assert_eq!(out["mcp-session-id"], REDACTED);
        assert_eq!(out["content-type"], "application/json");
        assert!(!out["x-debug"].as_str().unwrap().contains("hunter2"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(s: &str) -> String {
        mask_text(s).into_owned()
    }

    #[test]
    fn known_shapes_are_masked() {
        let cases = [
            ("Authorization: Bearer abc.def-ghi_jkl", "Bearer"),
            ("key sk-proj-abcdefghijklmnopqrstuvwxyz012345", "sk-proj-abc"),
            ("sk-ant-api03-abcdefghijklmnopqrstuvwxyz", "sk-ant-api03"),
            ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abc"),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
                "github_pat_11",
            ),
            ("glpat-abcdefghijklmnopqrst", "glpat-abc"),
            ("xoxb-123456789012-abcdefghijkl", "xoxb-1234"),
            ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSF"),
            ("AIzaSyA-abcdefghijklmnopqrstuvwxyz012345", "AIzaSyA"),
            ("sk_live_abcdefghijklmnop1234", "sk_live_abc"),
            ("hf_abcdefghijklmnopqrstuvwxyzABCDEF", "hf_abcdef"),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "eyJhbGci",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
                "MIIEow",
            ),
            ("postgres://admin:hunter2@db:5432/app", "hunter2"),
            ("url?api_key=abc123&x=1", "abc123"),
            ("password: 's3cr3t!'", "s3cr3t"),
        ];
        for (input, secret) in cases {
            let out = masked(input);
            assert!(!out.contains(secret), "{input:?} -> {out:?}");
            assert!(out.contains("REDACTED"), "{input:?} -> {out:?}");
        }
    }

    #[test]
    fn ordinary_text_is_untouched() {
        for s in [
            "hello world",
            "tools/call add",
            "max_tokens=100",
            "https://example.com/path?q=1",
            "sk-short",
            "task-1234",
        ] {
            assert_eq!(masked(s), s);
        }
    }

    #[test]
    fn cmdline_flags_and_env_words() {
        let args: Vec<String> = [
            "node",
            "server.js",
            "--token",
            "abc",
            "--api-key=xyz",
            "-p",
            "8080",
            "GITHUB_TOKEN=ghx",
            "--db",
            "postgres://u:pw@h/db",
            "--name=x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = mask_cmdline(&args);
        assert_eq!(
            out,
            vec![
                "node",
                "server.js",
                "--token",
                REDACTED,
                "--api-key=[REDACTED]",
                "-p",
                "8080",
                "GITHUB_TOKEN=[REDACTED]",
                "--db",
                "postgres://u:[REDACTED]@h/db",
                "--name=x"
            ]
        );
    }

    #[test]
    fn json_keys_and_values() {
        let mut v = serde_json::json!({
            "query": "select 1",
            "password": "p",
            "headers": {"Authorization": "Bearer abcdefghijkl", "X-Trace": "1"},
            "max_tokens": 100,
            "list": ["ghp_abcdefghijklmnopqrstuvwxyz0123456789"],
        });
        mask_json(&mut v);
        assert_eq!(v["query"], "select 1");
        assert_eq!(v["password"], REDACTED);
        assert_eq!(v["headers"]["Authorization"], REDACTED);
        assert_eq!(v["headers"]["X-Trace"], "1");
        assert_eq!(v["max_tokens"], 100);
        assert!(v["list"][0].as_str().unwrap().contains("REDACTED"));
    }

    #[test]
    fn capped_values_say_their_size() {
        let v = serde_json::json!({"a": "x".repeat(100)});
        assert_eq!(cap_json(v.clone(), 1000), v);
        assert_eq!(cap_json(v, 10)["mcptap.truncated"], true);
    }
}
