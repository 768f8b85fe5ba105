//! The sinks of the configuration file (`--config`, docs/configuration.md):
//! where events are delivered besides `--events`, each with its filters and
//! rate limit. Validated at start with line-numbered errors.
//!
//! ```toml
//! [[sink]]
//! name = "audit"
//! type = "file"                      # file | syslog | http | otlp
//! path = "/var/log/mcptap/events.jsonl"
//! rotate_size = "100MiB"
//! rotate_interval = "1d"
//! keep_files = 14
//! max_age = "30d"
//! include = { "event.type" = ["mcp.operation", "mcp.alert"] }
//! exclude = { "mcp.method.name" = ["ping"] }
//! rate_limit = 500                   # events per second (burst: rate_burst)
//! ```

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::filter::{Filter, RateLimit};

/// One configured sink.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkKind,
    pub filter: Filter,
    pub rate_limit: Option<RateLimit>,
    /// Events buffered between the pipeline and the sink's worker.
    pub queue: usize,
}

#[derive(Debug, Clone)]
pub enum SinkKind {
    Stdout,
    File(FileOptions),
    Syslog(SyslogOptions),
    Http(HttpOptions),
    Otlp(OtlpOptions),
}

impl SinkKind {
    pub fn label(&self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::File(_) => "file",
            SinkKind::Syslog(_) => "syslog",
            SinkKind::Http(_) => "http",
            SinkKind::Otlp(_) => "otlp",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileOptions {
    pub path: PathBuf,
    pub rotate_size: Option<u64>,
    pub rotate_interval: Option<Duration>,
    /// Rotated files kept (the newest ones).
    pub keep_files: Option<usize>,
    /// Rotated files older than this are deleted.
    pub max_age: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogProtocol {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone)]
pub struct SyslogOptions {
    pub address: String,
    pub protocol: SyslogProtocol,
    /// PEM file of the CA that signed the receiver's certificate (TLS);
    /// the system's roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// Name checked against the receiver's certificate (TLS); the host of
    /// `address` otherwise.
    pub server_name: Option<String>,
    /// Facility number (RFC 5424 §6.2.1).
    pub facility: u8,
    /// Largest datagram sent over UDP; larger events are sent without their
    /// payload, or dropped and counted if still too large.
    pub max_datagram: usize,
    pub delivery: DeliveryOptions,
}

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub url: String,
    /// Extra request headers; `${VAR}` in a value is replaced by the
    /// agent's environment variable, so tokens stay out of the file.
    pub headers: Vec<(String, String)>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub delivery: DeliveryOptions,
}

#[derive(Debug, Clone)]
pub struct OtlpOptions {
    /// Base URL of an OTLP/HTTP receiver (`/v1/traces` and `/v1/logs` are
    /// appended), e.g. `http://127.0.0.1:4318`.
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub delivery: DeliveryOptions,
}

/// How a network sink batches, retries and spools.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryOptions {
    pub batch_events: usize,
    pub batch_bytes: usize,
    /// How long events wait for more before a partial batch goes.
    pub flush_interval: Duration,
    /// The on-disk spool's bound: past it new events are dropped and counted.
    pub spool_max_size: u64,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            batch_events: 500,
            batch_bytes: 4 << 20,
            flush_interval: Duration::from_millis(200),
            spool_max_size: 1 << 30,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }
}

pub const DEFAULT_QUEUE: usize = 65536;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "sink")]
    sinks: Vec<Spanned<toml::Table>>,
    /// Who calls are for (`crate::enrich::identity::JwtConfig`), read by
    /// [`load_identity`].
    #[serde(default)]
    identity: Option<Spanned<toml::Table>>,
}

/// Keys every sink takes.
#[derive(Debug, Deserialize)]
struct Common {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    include: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    exclude: BTreeMap<String, Vec<String>>,
    rate_limit: Option<f64>,
    rate_burst: Option<f64>,
    queue: Option<usize>,
}
const COMMON_KEYS: &[&str] = &[
    "name",
    "type",
    "include",
    "exclude",
    "rate_limit",
    "rate_burst",
    "queue",
];

#[derive(Debug, Deserialize)]
struct FileKeys {
    path: PathBuf,
    rotate_size: Option<Size>,
    rotate_interval: Option<String>,
    keep_files: Option<usize>,
    max_age: Option<String>,
}
const FILE_KEYS: &[&str] = &["path", "rotate_size", "rotate_interval", "keep_files", "max_age"];

#[derive(Debug, Deserialize)]
struct SyslogKeys {
    address: String,
    protocol: Option<String>,
    ca_file: Option<PathBuf>,
    server_name: Option<String>,
    facility: Option<String>,
    max_datagram: Option<Size>,
}
const SYSLOG_KEYS: &[&str] = &[
    "address",
    "protocol",
    "ca_file",
    "server_name",
    "facility",
    "max_datagram",
];

#[derive(Debug, Deserialize)]
struct HttpKeys {
    url: Option<String>,
    endpoint: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    ca_file: Option<PathBuf>,
    timeout: Option<String>,
}
const HTTP_KEYS: &[&str] = &["url", "headers", "ca_file", "timeout"];
const OTLP_KEYS: &[&str] = &["endpoint", "headers", "ca_file", "timeout"];

#[derive(Debug, Deserialize)]
struct DeliveryKeys {
    batch_events: Option<usize>,
    batch_size: Option<Size>,
    flush_interval: Option<String>,
    spool_max_size: Option<Size>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
}
const DELIVERY_KEYS: &[&str] = &[
    "batch_events",
    "batch_size",
    "flush_interval",
    "spool_max_size",
    "retry_initial",
    "retry_max",
];

/// A size: a number of bytes or a string like "100MiB".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self, key: &str) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(s) => s
                .parse::<bytesize::ByteSize>()
                .map(|b| b.as_u64())
                .map_err(|e| format!("{key}: `{s}` is not a size like \"100MiB\": {e}")),
        }
    }
}

fn duration(key: &str, s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{key}: `{s}` is not a duration like \"30s\" or \"1d\": {e}"))
}

fn opt_duration(key: &str, s: &Option<String>) -> Result<Option<Duration>, String> {
    s.as_deref().map(|s| duration(key, s)).transpose()
}

/// Loads the sinks of a configuration file.
pub fn load(path: &Path) -> Result<Vec<SinkConfig>, crate::tomlfile::FileError> {
    crate::tomlfile::load(path, "configuration", parse)
}

/// The `[identity]` section of the configuration file: the keys JWTs are
/// checked against.
pub fn load_identity(path: &Path) -> Result<Option<crate::enrich::identity::JwtConfig>, crate::tomlfile::FileError> {
    crate::tomlfile::load(path, "configuration", parse_identity)
}

pub fn parse_identity(
    text: &str,
) -> Result<Option<crate::enrich::identity::JwtConfig>, (std::ops::Range<usize>, String)> {
    let file: File = toml::from_str(text).map_err(|e| (e.span().unwrap_or(0..0), e.message().to_string()))?;
    let Some(table) = file.identity else {
        return Ok(None);
    };
    let span = table.span();
    let config: crate::enrich::identity::JwtConfig = table
        .into_inner()
        .try_into()
        .map_err(|e: toml::de::Error| (span.clone(), format!("identity: {}", e.message())))?;
    if config.jwks_file.is_some() && config.jwks_url.is_some() {
        return Err((span, "identity: give jwks_file or jwks_url, not both".into()));
    }
    Ok(Some(config))
}

/// Parses and checks the sinks; errors carry the byte range at fault.
pub fn parse(text: &str) -> Result<Vec<SinkConfig>, (std::ops::Range<usize>, String)> {
    let file: File = toml::from_str(text).map_err(|e| (e.span().unwrap_or(0..0), e.message().to_string()))?;
    let mut sinks: Vec<SinkConfig> = Vec::new();
    for spanned in &file.sinks {
        let span = spanned.span();
        let sink = parse_sink(spanned.get_ref()).map_err(|m| (span.clone(), m))?;
        if sinks.iter().any(|s| s.name == sink.name) || sink.name == "events" {
            return Err((span, format!("sink `{}`: the name is already taken", sink.name)));
        }
        sinks.push(sink);
    }
    Ok(sinks)
}

fn parse_sink(table: &toml::Table) -> Result<SinkConfig, String> {
    let common: Common = table
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| format!("sink: {}", e.message()))?;
    let name = common.name.clone();
    let ctx = |m: String| format!("sink `{name}`: {m}");
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ctx(
            "the name must be letters, digits, `-` and `_` (it names the spool directory and metric label)".into(),
        ));
    }
    let keys: Vec<&[&str]> = match common.kind.as_str() {
        "file" => vec![FILE_KEYS],
        "syslog" => vec![SYSLOG_KEYS, DELIVERY_KEYS],
        "http" => vec![HTTP_KEYS, DELIVERY_KEYS],
        "otlp" => vec![OTLP_KEYS, DELIVERY_KEYS],
        "stdout" => vec![],
        other => {
            return Err(ctx(format!(
                "unknown type `{other}`: file, syslog, http, otlp or stdout"
            )));
        }
    };
    for key in table.keys() {
        if !COMMON_KEYS.contains(&key.as_str()) && !keys.iter().any(|ks| ks.contains(&key.as_str())) {
            let mut all: Vec<&str> = COMMON_KEYS.to_vec();
            keys.iter().for_each(|ks| all.extend_from_slice(ks));
            return Err(ctx(format!(
                "unknown key `{key}` for type {}; expected one of: {}",
                common.kind,
                all.join(", ")
            )));
        }
    }
    let typed = |e: toml::de::Error| ctx(e.message().to_string());
    let kind = match common.kind.as_str() {
        "stdout" => SinkKind::Stdout,
        "file" => {
            let k: FileKeys = table.clone().try_into().map_err(typed)?;
            let rotate_size = k.rotate_size.map(|s| s.bytes("rotate_size")).transpose().map_err(ctx)?;
            if rotate_size == Some(0) {
                return Err(ctx("rotate_size must be positive".into()));
            }
            SinkKind::File(FileOptions {
                path: k.path,
                rotate_size,
                rotate_interval: opt_duration("rotate_interval", &k.rotate_interval).map_err(ctx)?,
                keep_files: k.keep_files,
                max_age: opt_duration("max_age", &k.max_age).map_err(ctx)?,
            })
        }
        "syslog" => {
            let k: SyslogKeys = table.clone().try_into().map_err(typed)?;
            let protocol = match k.protocol.as_deref().unwrap_or("udp") {
                "udp" => SyslogProtocol::Udp,
                "tcp" => SyslogProtocol::Tcp,
                "tls" => SyslogProtocol::Tls,
                other => return Err(ctx(format!("protocol `{other}`: udp, tcp or tls"))),
            };
            if !k.address.contains(':') {
                return Err(ctx(format!("address `{}` needs a port, like host:514", k.address)));
            }
            let facility = match k.facility.as_deref() {
                None => 16, // local0
                Some(f) => facility(f).ok_or_else(|| ctx(format!("unknown facility `{f}`")))?,
            };
            SinkKind::Syslog(SyslogOptions {
                address: k.address,
                protocol,
                ca_file: k.ca_file,
                server_name: k.server_name,
                facility,
                max_datagram: k
                    .max_datagram
                    .map(|s| s.bytes("max_datagram"))
                    .transpose()
                    .map_err(ctx)?
                    .unwrap_or(65_000)
                    .min(65_507) as usize,
                delivery: delivery(table).map_err(ctx)?,
            })
        }
        "http" | "otlp" => {
            let k: HttpKeys = table.clone().try_into().map_err(typed)?;
            let headers = k
                .headers
                .iter()
                .map(|(h, v)| Ok((h.clone(), expand_env(v)?)))
                .collect::<Result<Vec<_>, String>>()
                .map_err(ctx)?;
            let timeout = opt_duration("timeout", &k.timeout)
                .map_err(ctx)?
                .unwrap_or(Duration::from_secs(10));
            let delivery = delivery(table).map_err(ctx)?;
            if common.kind == "http" {
                let url = k.url.ok_or_else(|| ctx("missing key `url`".into()))?;
                check_url(&url).map_err(ctx)?;
                SinkKind::Http(HttpOptions {
                    url,
                    headers,
                    ca_file: k.ca_file,
                    timeout,
                    delivery,
                })
            } else {
                let endpoint = k.endpoint.ok_or_else(|| ctx("missing key `endpoint`".into()))?;
                check_url(&endpoint).map_err(ctx)?;
                SinkKind::Otlp(OtlpOptions {
                    endpoint: endpoint.trim_end_matches('/').to_string(),
                    headers,
                    ca_file: k.ca_file,
                    timeout,
                    delivery,
                })
            }
        }
        _ => unreachable!("checked above"),
    };
    let filter = Filter::new(&common.include, &common.exclude).map_err(ctx)?;
    let rate_limit = match common.rate_limit {
        None => None,
        Some(r) if r > 0.0 && r.is_finite() => Some(RateLimit::new(r, common.rate_burst.unwrap_or(r).max(1.0))),
        Some(r) => {
            return Err(ctx(format!(
                "rate_limit {r}: must be a positive number of events per second"
            )));
        }
    };
    Ok(SinkConfig {
        name,
        kind,
        filter,
        rate_limit,
        queue: common.queue.unwrap_or(DEFAULT_QUEUE).max(1),
    })
}

fn delivery(table: &toml::Table) -> Result<DeliveryOptions, String> {
    let k: DeliveryKeys = table
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    let d = DeliveryOptions::default();
    let out = DeliveryOptions {
        batch_events: k.batch_events.unwrap_or(d.batch_events).max(1),
        batch_bytes: k
            .batch_size
            .map(|s| s.bytes("batch_size"))
            .transpose()?
            .map_or(d.batch_bytes, |b| b as usize),
        flush_interval: opt_duration("flush_interval", &k.flush_interval)?.unwrap_or(d.flush_interval),
        spool_max_size: k
            .spool_max_size
            .map(|s| s.bytes("spool_max_size"))
            .transpose()?
            .unwrap_or(d.spool_max_size),
        retry_initial: opt_duration("retry_initial", &k.retry_initial)?.unwrap_or(d.retry_initial),
        retry_max: opt_duration("retry_max", &k.retry_max)?.unwrap_or(d.retry_max),
    };
    if out.retry_initial.is_zero() || out.retry_max < out.retry_initial {
        return Err("retry_initial must be positive and at most retry_max".into());
    }
    Ok(out)
}

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!("`{url}` is not an http:// or https:// URL"))
    }
}

/// `${VAR}` replaced by the environment variable; a missing one is an error
/// (a collector token silently empty would fail later, less clearly).
fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start + 2..].find('}') else {
            return Err("unclosed `${` in a header value".to_string());
        };
        let var = &rest[start + 2..start + 2 + len];
        let v = std::env::var(var).map_err(|_| format!("header value names ${{{var}}}, which is not set"))?;
        out.push_str(&v);
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

fn facility(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp", "ntp",
        "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_line(text: &str) -> (usize, String) {
        let (span, message) = parse(text).unwrap_err();
        (crate::tomlfile::line_col(text, span.start).0, message)
    }

    #[test]
    fn parses_every_type() {
        // SAFETY: tests in this module are the only users of this variable.
        unsafe { std::env::set_var("MCPTAP_TEST_TOKEN", "s3cr3t") };
        let sinks = parse(
            r#"
[[sink]]
name = "audit"
type = "file"
path = "/var/log/mcptap/events.jsonl"
rotate_size = "100MiB"
rotate_interval = "1d"
keep_files = 14
max_age = "30d"
include = { "event.type" = ["mcp.operation", "mcp.alert"] }

[[sink]]
name = "siem"
type = "syslog"
address = "127.0.0.1:514"
protocol = "tcp"
facility = "auth"
rate_limit = 100

[[sink]]
name = "collector"
type = "http"
url = "https://collector.example/ingest"
headers = { Authorization = "Bearer ${MCPTAP_TEST_TOKEN}" }
batch_events = 100
spool_max_size = "10MiB"

[[sink]]
name = "otel"
type = "otlp"
endpoint = "http://127.0.0.1:4318/"
"#,
        )
        .unwrap();
        assert_eq!(sinks.len(), 4);
        let SinkKind::File(f) = &sinks[0].kind else { panic!() };
        assert_eq!(f.rotate_size, Some(100 << 20));
        assert_eq!(f.rotate_interval, Some(Duration::from_secs(86400)));
        assert_eq!(f.keep_files, Some(14));
        let SinkKind::Syslog(s) = &sinks[1].kind else { panic!() };
        assert_eq!((s.protocol, s.facility), (SyslogProtocol::Tcp, 4));
        assert!(sinks[1].rate_limit.is_some());
        let SinkKind::Http(h) = &sinks[2].kind else { panic!() };
        assert_eq!(
            h.headers,
            vec![("Authorization".to_string(), "Bearer s3cr3t".to_string())]
        );
        assert_eq!(h.delivery.batch_events, 100);
        assert_eq!(h.delivery.spool_max_size, 10 << 20);
        let SinkKind::Otlp(o) = &sinks[3].kind else { panic!() };
        assert_eq!(o.endpoint, "http://127.0.0.1:4318");
    }

    #[test]
    fn bad_files_say_where() {
        let (line, m) = error_line(
            "[[sink]]\nname = \"a\"\ntype = \"file\"\npath = \"/x\"\n\n[[sink]]\nname = \"b\"\ntype = \"syslog\"\nadress = \"x:1\"\n",
        );
        assert_eq!(line, 6);
        assert!(m.contains("unknown key `adress`"), "{m}");
        let (_, m) = error_line("[[sink]]\nname = \"a\"\ntype = \"kafka\"\n");
        assert!(m.contains("unknown type `kafka`"), "{m}");
        let (_, m) = error_line("[[sink]]\nname = \"a\"\ntype = \"file\"\npath = \"/x\"\nrotate_size = \"lots\"\n");
        assert!(m.contains("rotate_size"), "{m}");
        let (_, m) = error_line("[[sink]]\nname = \"a\"\ntype = \"syslog\"\naddress = \"nohost\"\n");
        assert!(m.contains("needs a port"), "{m}");
        let (_, m) = error_line("[[sink]]\nname = \"a\"\ntype = \"http\"\nurl = \"ftp://x\"\n");
        assert!(m.contains("not an http"), "{m}");
        let (_, m) = error_line(
            "[[sink]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://x\"\nheaders = { A = \"${MCPTAP_SURELY_UNSET}\" }\n",
        );
        assert!(m.contains("MCPTAP_SURELY_UNSET"), "{m}");
        let (_, m) = error_line(
            "[[sink]]\nname = \"a\"\ntype = \"file\"\npath = \"/x\"\n[[sink]]\nname = \"a\"\ntype = \"stdout\"\n",
        );
        assert!(m.contains("already taken"), "{m}");
        let (_, m) = error_line("[[sink]]\nname = \"a b\"\ntype = \"stdout\"\n");
        assert!(m.contains("letters, digits"), "{m}");
        let (_, m) = error_line("[[sink]]\nname = \"a\"\ntype = \"stdout\"\ninclude = { \"status\" = [\"[\"] }\n");
        assert!(m.contains("bad pattern"), "{m}");
        let (_, m) = error_line("[[sink]]\nname = \"a\"\ntype = \"stdout\"\ninclude = { \"gen_ai.tool\" = [\"x\"] }\n");
        assert!(m.contains("unknown event field `gen_ai.tool`"), "{m}");
        let (line, _) = error_line("[[sink]]\nname = \"a\"\ntype = \"stdout\"\n[other]\n");
        assert_eq!(line, 4);
    }
}
