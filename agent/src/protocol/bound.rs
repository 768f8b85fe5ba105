//! Bounds on what a peer names: every string the later stages keep
//! (method, tool, resource, client and server names and versions, ids,
//! error messages) is cut here, once, as a message is parsed.
//!
//! A name is a peer's choice, and the agent keeps names for as long as a
//! request is in flight, in every event, metric label, store row and API
//! answer: one 1 MB tool name would otherwise cost megabytes in each. A cut
//! keeps the first bytes (at a character boundary), then `…` and 8 hex
//! digits of the SHA-256 of the whole: two long names that share their
//! first bytes stay two names (a request id cut so still matches its own
//! answer, never another's). Each cut is counted by field
//! (`mcptap_fields_cut_total{field}`).

/// Longest kept, in bytes: names (methods, tools, prompts, clients,
/// servers, versions, protocol versions, progress tokens).
pub const NAME: usize = 256;
/// Request ids.
pub const ID: usize = 128;
/// Resource URIs.
pub const URI: usize = 1024;
/// Error messages.
pub const MESSAGE: usize = 1024;

/// Cuts `s` to at most `max` bytes plus its marker; true when cut.
pub fn cut(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    for b in &digest.as_ref()[..4] {
        s.push_str(&format!("{b:02x}"));
    }
    true
}

/// The same for a copy.
pub fn cut_str(s: &str, max: usize) -> String {
    let mut owned = s.to_string();
    cut(&mut owned, max);
    owned
}

/// Fields cut in one message, by name (rare: allocated only then).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cuts(Vec<&'static str>);

impl Cuts {
    /// Cuts `s` as field `field`.
    pub fn apply(&mut self, field: &'static str, s: &mut String, max: usize) {
        if cut(s, max) {
            self.0.push(field);
        }
    }

    pub fn fields(&self) -> &[&'static str] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_stay_long_ones_are_cut_distinctly() {
        let mut short = "add".to_string();
        assert!(!cut(&mut short, NAME));
        assert_eq!(short, "add");
        let a = "x".repeat(1 << 20) + "a";
        let b = "x".repeat(1 << 20) + "b";
        let (ca, cb) = (cut_str(&a, NAME), cut_str(&b, NAME));
        assert!(ca.len() <= NAME + 3 + 8, "{}", ca.len());
        assert_ne!(ca, cb, "two names stay two names");
        assert_eq!(ca, cut_str(&a, NAME), "the same name cuts the same way");
    }

    #[test]
    fn cuts_at_a_character_boundary() {
        let s = "é".repeat(300);
        let c = cut_str(&s, 5);
        assert!(c.starts_with("éé…"), "{c}");
    }

    #[test]
    fn counts_each_field_cut() {
        let mut cuts = Cuts::default();
        let mut long = "y".repeat(2000);
        let mut short = "z".to_string();
        cuts.apply("gen_ai.tool.name", &mut long, NAME);
        cuts.apply("mcp.method.name", &mut short, NAME);
        assert_eq!(cuts.fields(), ["gen_ai.tool.name"]);
    }
}
