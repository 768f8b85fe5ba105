//! Per-sink filters and rate limits: which events a sink takes, and how
//! many per second. Both run in the pipeline, before the sink's queue, so a
//! filtered-out event costs no copy.

use std::{collections::BTreeMap, time::Instant};

use serde_json::Value;

use crate::{event::Event, policy::Pattern};

/// `include`: every named field must match one of its patterns;
/// `exclude`: an event is refused when any named field matches one of its.
/// Fields are the event's JSON names (`event.type`, `gen_ai.tool.name`,
/// `server.name`, `client.process.user`, ...: `event::FIELDS`), read from
/// the typed event; numbers and booleans match as their text.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    include: Vec<(String, Vec<Pattern>)>,
    exclude: Vec<(String, Vec<Pattern>)>,
}

impl Filter {
    pub fn new(
        include: &BTreeMap<String, Vec<String>>,
        exclude: &BTreeMap<String, Vec<String>>,
    ) -> Result<Filter, String> {
        let compile = |m: &BTreeMap<String, Vec<String>>| -> Result<Vec<(String, Vec<Pattern>)>, String> {
            m.iter()
                .map(|(field, globs)| {
                    if !crate::event::FIELDS.contains(&field.as_str()) {
                        return Err(format!(
                            "unknown event field `{field}` (fields: {})",
                            crate::event::FIELDS.join(", ")
                        ));
                    }
                    Ok((
                        field.clone(),
                        globs.iter().map(|g| Pattern::new(g)).collect::<Result<_, _>>()?,
                    ))
                })
                .collect()
        };
        Ok(Filter {
            include: compile(include)?,
            exclude: compile(exclude)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    pub fn admits(&self, event: &Event) -> bool {
        let matches = |(field, patterns): &(String, Vec<Pattern>)| {
            event
                .field(field)
                .is_some_and(|text| patterns.iter().any(|p| p.matches(&text)))
        };
        self.include.iter().all(matches) && !self.exclude.iter().any(matches)
    }
}

/// A field of a serialized event (a spooled line, read back by the network
/// sinks) by its dotted name. Event keys themselves contain dots
/// (`mcp.method.name` at the top, `process.pid` inside `server`), so at
/// each level the longest key that prefixes the rest of the name wins.
pub fn lookup<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    let obj = value.as_object()?;
    if let Some(v) = obj.get(name) {
        return Some(v);
    }
    let mut best: Option<(&str, &Value)> = None;
    for (key, v) in obj {
        if name.len() > key.len()
            && name.starts_with(key.as_str())
            && name.as_bytes()[key.len()] == b'.'
            && best.is_none_or(|(b, _)| key.len() > b.len())
        {
            best = Some((key, v));
        }
    }
    let (key, v) = best?;
    lookup(v, &name[key.len() + 1..])
}

/// A token bucket: `rate` events per second on average, `burst` at once.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl RateLimit {
    pub fn new(rate: f64, burst: f64) -> RateLimit {
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    pub fn admit(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn filter(include: &[(&str, &[&str])], exclude: &[(&str, &[&str])]) -> Filter {
        let m = |pairs: &[(&str, &[&str])]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect()
        };
        Filter::new(&m(include), &m(exclude)).unwrap()
    }

    fn event() -> Event {
        let mut e = crate::event::testing::full();
        e.kind = crate::event::EventType::Operation;
        e.alert = None;
        e.method = Some("tools/call".into());
        e.tool = Some("delete_repo".into());
        e.status = Some("ok");
        e.server.name = Some("github".into());
        e.client.name = Some("claude-code".into());
        e.tls = Some(false);
        let mut p = (**e.server.process.as_ref().unwrap()).clone();
        p.pid = 42;
        p.user = Some("alice".into());
        e.server.process = Some(std::sync::Arc::new(p));
        e
    }

    #[test]
    fn unknown_fields_are_refused_at_load() {
        let m: BTreeMap<String, Vec<String>> = [("gen_ai.tool".to_string(), vec!["x".to_string()])].into();
        let err = Filter::new(&m, &BTreeMap::new()).unwrap_err();
        assert!(err.contains("unknown event field `gen_ai.tool`"), "{err}");
    }

    #[test]
    fn looks_up_dotted_names_at_any_level() {
        let e = json!({
            "mcp.method.name": "tools/call",
            "server": {"name": "github", "process": {"pid": 42, "user": "alice"}}
        });
        assert_eq!(lookup(&e, "mcp.method.name"), Some(&json!("tools/call")));
        assert_eq!(lookup(&e, "server.name"), Some(&json!("github")));
        assert_eq!(lookup(&e, "server.process.pid"), Some(&json!(42)));
        assert_eq!(lookup(&e, "server.process.user"), Some(&json!("alice")));
        assert_eq!(lookup(&e, "server.nope"), None);
        assert_eq!(lookup(&e, "mcp.method"), None);
    }

    #[test]
    fn include_needs_every_field_exclude_any() {
        let e = event();
        assert!(Filter::default().admits(&e));
        assert!(filter(&[("event.type", &["mcp.operation", "mcp.alert"])], &[]).admits(&e));
        assert!(!filter(&[("event.type", &["mcp.alert"])], &[]).admits(&e));
        assert!(filter(&[("event.type", &["mcp.*"]), ("gen_ai.tool.name", &["delete_*"])], &[]).admits(&e));
        assert!(!filter(&[("event.type", &["mcp.*"]), ("client.name", &["cursor"])], &[]).admits(&e));
        // A field the event lacks: not included, not excluded.
        assert!(!filter(&[("alert.kind", &["*"])], &[]).admits(&e));
        assert!(filter(&[], &[("alert.kind", &["*"])]).admits(&e));
        assert!(!filter(&[], &[("server.process.pid", &["42"])]).admits(&e));
        assert!(!filter(&[], &[("tls", &["false"])]).admits(&e));
        assert!(filter(&[], &[("mcp.method.name", &["ping", "notifications/*"])]).admits(&e));
    }

    #[test]
    fn rate_limit_allows_burst_then_rate() {
        let mut r = RateLimit::new(10.0, 5.0);
        let t0 = Instant::now();
        assert_eq!((0..20).filter(|_| r.admit(t0)).count(), 5);
        // One second later: ten more, not more than the burst at once.
        assert_eq!((0..20).filter(|_| r.admit(t0 + Duration::from_secs(1))).count(), 5);
        assert_eq!((0..20).filter(|_| r.admit(t0 + Duration::from_millis(1100))).count(), 1);
    }
}
