//! Who each HTTP call was for, from its `Authorization` header, with the
//! real agent and the official Python SDK client and server: a JWT's claims
//! (verified against the operator's JWKS, or said to be unverified), an
//! opaque token's keyed fingerprint, Basic's user name; the credentials
//! themselves in no output of the agent (events, log, store, metrics); the
//! policy's allowed users matched on evidence only (a verified token, a
//! fingerprint, the process's owner), never on an unverified claim.

use std::{path::Path, time::Duration};

use base64::Engine;
use mcptap_tests::{Agent, env, operations_of, summary};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// An RSA key of the test's identity provider (openssl), and its JWKS.
struct Issuer {
    key: std::path::PathBuf,
    jwks: Value,
}

fn issuer(dir: &Path) -> Issuer {
    let key = dir.join("idp-key.pem");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    run(&["genrsa", "-out", key.to_str().unwrap(), "2048"]);
    let modulus = String::from_utf8(run(&["rsa", "-in", key.to_str().unwrap(), "-noout", "-modulus"])).unwrap();
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwks =
        json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": e.encode(n), "e": "AQAB"}]});
    Issuer { key, jwks }
}

impl Issuer {
    /// A JWT of `claims` signed with the issuer's key (RS256).
    fn sign(&self, claims: &Value) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing_input = format!(
            "{}.{}",
            e.encode(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#),
            e.encode(claims.to_string())
        );
        let mut child = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-sign", self.key.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("openssl dgst");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(signing_input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        format!("{signing_input}.{}", e.encode(out.stdout))
    }
}

/// A JWT anyone can write: `alg: none`, no signature.
fn unsigned(claims: &Value) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        e.encode(br#"{"alg":"none","typ":"JWT"}"#),
        e.encode(claims.to_string())
    )
}

/// Every file under `dir`, as bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

#[test]
fn http_calls_carry_who_they_were_for_and_never_the_credential() {
    let env = env();
    let dir = env.artifacts.join("identity-files");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[server]]\nname = \"e2e-identity\"\nallowed_users = [\"*@example.com\"]\n",
    )
    .unwrap();
    let idp = issuer(&dir);
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, idp.jwks.to_string()).unwrap();
    let config = dir.join("mcptap.toml");
    std::fs::write(
        &config,
        format!(
            "[identity]\njwks_file = \"{}\"\nissuers = [\"https://idp.example.com\"]\n",
            jwks.display()
        ),
    )
    .unwrap();
    let agent = Agent::start(
        &env,
        "identity",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let srv = env.http_server("e2e-identity", &[]);
    let url = format!("http://127.0.0.1:{}/mcp", srv.port);

    let token = idp.sign(&json!({
        "sub": "u-42", "email": "ada@example.com", "preferred_username": "ada",
        "azp": "claude-code", "scope": "mcp:tools", "iss": "https://idp.example.com",
        "exp": 1_900_000_000
    }));
    // Anyone can write a JWT naming alice@example.com.
    let forged = unsigned(
        &json!({"sub": "u-1", "email": "alice@example.com", "iss": "https://idp.example.com",
        "exp": 1_900_000_000}),
    );
    let (opaque, other_opaque) = ("opq-7f3a9c1e5b2d8f4a6c0e", "opq-0b1c2d3e4f5a6b7c8d9e");
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:hunter2-pass");
    let session = |client: &str, authorization: String| {
        json!({"url": url, "client_name": client, "headers": {"Authorization": authorization},
               "steps": [{"call": "add", "args": {"a": 1, "b": 2}, "repeat": 2}]})
    };
    let plan = json!({"sessions": [
        session("jwt-client", format!("Bearer {token}")),
        session("opaque-client", format!("Bearer {opaque}")),
        session("opaque-again", format!("Bearer {opaque}")),
        session("opaque-other", format!("Bearer {other_opaque}")),
        session("basic-client", format!("Basic {basic}")),
        session("forged-client", format!("Bearer {forged}")),
    ]});
    let report = env.drive(&plan);
    for s in report["sessions"].as_array().unwrap() {
        assert!(s.get("error").is_none(), "a client failed: {s}");
    }
    // initialize, whoami, tools/list, 2 add: 5 per session.
    let per_session = 5;
    let events = agent.wait_events("every session's operations", WAIT, |ev| {
        operations_of(ev, srv.pid()).len() >= 6 * 2 * per_session
    });
    // Both ends are watched (loopback): the server read the header, the
    // client wrote it; each side derives the same identity.
    let ops = operations_of(&events, srv.pid());
    let of = |client: &str| -> Vec<Value> { ops.iter().filter(|e| e["client"]["name"] == client).cloned().collect() };
    for client in [
        "jwt-client",
        "opaque-client",
        "opaque-again",
        "opaque-other",
        "basic-client",
        "forged-client",
    ] {
        let mine = of(client);
        assert_eq!(mine.len(), 2 * per_session, "{client}:\n{}", summary(&mine));
        let server_side = mine.iter().filter(|e| e["observer"] == "server").count();
        assert_eq!(server_side, per_session, "{client}:\n{}", summary(&mine));
    }

    for e in of("jwt-client") {
        let u = &e["user"];
        assert_eq!(u["source"], "jwt", "{e}");
        assert_eq!(u["id"], "u-42");
        assert_eq!(u["email"], "ada@example.com");
        assert_eq!(u["name"], "ada");
        assert_eq!(u["client_id"], "claude-code");
        assert_eq!(u["scope"], "mcp:tools");
        assert_eq!(u["issuer"], "https://idp.example.com");
        assert_eq!(u["expires"], 1_900_000_000);
        assert_eq!(u["verified"], true, "signed by the configured issuer's key: {e}");
    }
    for e in of("forged-client") {
        assert_eq!(e["user"]["source"], "jwt", "{e}");
        assert_eq!(e["user"]["email"], "alice@example.com");
        assert_eq!(e["user"]["verified"], false, "alg none: verified by nothing");
    }
    let fingerprints = |client: &str| -> Vec<String> {
        of(client)
            .iter()
            .map(|e| {
                assert_eq!(e["user"]["source"], "bearer_token", "{e}");
                assert!(e["user"]["name"].is_null() && e["user"]["id"].is_null(), "{e}");
                e["user"]["fingerprint"].as_str().expect("fingerprint").to_string()
            })
            .collect()
    };
    let (one, again, other) = (
        fingerprints("opaque-client"),
        fingerprints("opaque-again"),
        fingerprints("opaque-other"),
    );
    assert!(
        one.iter().chain(&again).all(|f| *f == one[0]),
        "one token, one fingerprint: {one:?} {again:?}"
    );
    assert!(
        other.iter().all(|f| *f == other[0] && *f != one[0]),
        "{other:?} vs {one:?}"
    );
    assert!(one[0].starts_with("hmac-sha256:"), "{}", one[0]);
    for e in of("basic-client") {
        assert_eq!(e["user"]["source"], "basic", "{e}");
        assert_eq!(e["user"]["name"], "alice", "{e}");
    }

    // The policy: only *@example.com: the JWT's calls pass, the others
    // raise a violation naming their user.
    let alerts: Vec<Value> = events
        .iter()
        .filter(|e| {
            e["event.type"] == "mcp.alert" && e["alert"]["kind"] == "policy_violation" && e["observer"] == "server"
        })
        .cloned()
        .collect();
    assert!(
        !alerts.iter().any(|a| a["client"]["name"] == "jwt-client"),
        "{}",
        summary(&alerts)
    );
    for client in ["opaque-client", "opaque-other", "basic-client", "forged-client"] {
        let mine: Vec<&Value> = alerts.iter().filter(|a| a["client"]["name"] == client).collect();
        assert_eq!(mine.len(), per_session, "{client}: {} alerts", mine.len());
    }
    // The forged token names a user the policy allows: refused as a claim.
    assert!(
        alerts.iter().any(|a| a["client"]["name"] == "forged-client"
            && a["alert"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("\"alice@example.com\" (unverified claim)")),
        "{}",
        summary(&alerts)
    );
    assert!(
        alerts
            .iter()
            .any(|a| a["alert"]["message"].as_str().unwrap_or_default().contains("\"alice\"")),
        "{}",
        summary(&alerts)
    );

    // Per user, in metrics (bounded like the other labels), both sides.
    let m = agent.metrics();
    let both = 2.0 * per_session as f64;
    assert_eq!(
        m.value(
            "mcp_user_operations_total",
            &[("user", "ada@example.com"), ("user_source", "jwt")]
        ),
        both
    );
    assert_eq!(
        m.value(
            "mcp_user_operations_total",
            &[("user", &one[0]), ("user_source", "bearer_token")]
        ),
        2.0 * both,
        "two sessions with one token"
    );
    assert_eq!(
        m.value(
            "mcp_user_operations_total",
            &[("user", "alice"), ("user_source", "basic")]
        ),
        both
    );

    // The credentials are nowhere: events, log, store, metrics.
    let metrics_text = agent.metrics().0;
    let test_dir = env.artifacts.join("identity");
    agent.stop();
    let secrets = [
        token.as_str(),
        token.rsplit('.').next().unwrap(),
        opaque,
        other_opaque,
        basic.as_str(),
        "hunter2-pass",
    ];
    // `run --record` (MCPTAP_E2E_RECORD) writes the raw capture on purpose:
    // the operator's explicit debugging copy of the traffic, not an output.
    let mut outputs: Vec<(String, Vec<u8>)> = files(&test_dir)
        .into_iter()
        .filter(|(name, _)| !name.ends_with("capture.bin"))
        .collect();
    outputs.push(("metrics".into(), metrics_text.into_bytes()));
    assert!(
        outputs.len() >= 3,
        "{:?}",
        outputs.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    for (name, bytes) in &outputs {
        for secret in secrets {
            assert!(
                memchr::memmem::find(bytes, secret.as_bytes()).is_none(),
                "{secret:?} found in {name}"
            );
        }
    }
}
