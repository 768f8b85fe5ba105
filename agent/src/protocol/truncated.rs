//! A lenient scanner for messages longer than the framing cap: it reads the
//! top-level keys of the kept prefix as far as they are complete, so that an
//! oversized request or response can still be correlated and counted.

use serde_json::Value;

use super::jsonrpc::RequestId;

#[derive(Debug, Default, PartialEq)]
pub struct Found {
    pub id: Option<RequestId>,
    pub method: Option<String>,
    /// `params.name`.
    pub name: Option<String>,
    pub has_result: bool,
    pub error_code: Option<i64>,
    /// The kept tail says `"isError": true` (tool results put it last).
    pub tail_is_error: bool,
}

pub fn scan(prefix: &[u8], tail: &[u8]) -> Found {
    let mut found = Found::default();
    let mut s = Scanner { b: prefix, i: 0 };
    let _ = s.object(|s, key| {
        match key {
            b"id" => {
                let start = s.i;
                s.skip_value()?;
                let v: Value = serde_json::from_slice(&s.b[start..s.i]).ok()?;
                found.id = RequestId::from_value(&v);
            }
            b"method" => found.method = s.string_value(),
            b"params" => {
                if s.peek() == Some(b'{') {
                    s.object(|s, key| {
                        if key == b"name" {
                            found.name = s.string_value();
                            found.name.as_ref()?;
                            Some(())
                        } else {
                            s.skip_value()
                        }
                    })?;
                } else {
                    s.skip_value()?;
                }
            }
            b"result" => {
                found.has_result = true;
                s.skip_value()?;
            }
            b"error" => {
                if s.peek() == Some(b'{') {
                    s.object(|s, key| {
                        if key == b"code" {
                            let start = s.i;
                            s.skip_value()?;
                            found.error_code = std::str::from_utf8(&s.b[start..s.i]).ok()?.trim().parse().ok();
                            Some(())
                        } else {
                            s.skip_value()
                        }
                    })?;
                } else {
                    s.skip_value()?;
                }
            }
            _ => s.skip_value()?,
        }
        Some(())
    });
    found.tail_is_error = says_is_error_true(tail);
    found
}

fn says_is_error_true(tail: &[u8]) -> bool {
    let needle = b"\"isError\"";
    memchr::memmem::find_iter(tail, needle).any(|at| {
        let rest = &tail[at + needle.len()..];
        let rest = trim(rest);
        rest.first() == Some(&b':') && trim(&rest[1..]).starts_with(b"true")
    })
}

fn trim(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// Cursor over possibly cut JSON. Every method returns `None` when the
/// bytes end (or stop making sense) before the item does.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Walks an object, calling `on_key` positioned at each value.
    fn object(&mut self, mut on_key: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            let key_start = self.i + 1;
            self.skip_string()?;
            let bytes = self.b;
            let key = &bytes[key_start..self.i - 1];
            self.expect(b':')?;
            self.ws();
            on_key(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn string_value(&mut self) -> Option<String> {
        self.ws();
        let start = self.i;
        self.skip_string()?;
        serde_json::from_slice(&self.b[start..self.i]).ok()
    }

    fn skip_string(&mut self) -> Option<()> {
        if self.b.get(self.i)? != &b'"' {
            return None;
        }
        self.i += 1;
        loop {
            let at = memchr::memchr2(b'"', b'\\', self.b.get(self.i..)?)?;
            self.i += at;
            if self.b[self.i] == b'\\' {
                self.i += 2;
            } else {
                self.i += 1;
                return Some(());
            }
        }
    }

    fn skip_value(&mut self) -> Option<()> {
        self.ws();
        match *self.b.get(self.i)? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *self.b.get(self.i)? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
                {
                    self.i += 1;
                }
                // A scalar cut by the end of the prefix is not complete.
                (self.i > start && self.i < self.b.len()).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_complete_keys_of_a_cut_object() {
        let f = scan(br#"{"method":"tools/call","params":{"arguments":{"a":[1,{"b":"}"}]},"name":"n"},"jsonrpc":"2.0","id":"x-1","extra":"cut he"#, b"");
        assert_eq!(f.method.as_deref(), Some("tools/call"));
        assert_eq!(f.name.as_deref(), Some("n"));
        assert_eq!(f.id, Some(RequestId::String("x-1".into())));
    }

    #[test]
    fn error_code_and_result() {
        let f = scan(
            br#"{"jsonrpc":"2.0","id":4,"error":{"code":-32603,"message":"boom"#,
            b"",
        );
        assert_eq!(
            (f.id, f.error_code),
            (Some(RequestId::Number("4".into())), Some(-32603))
        );
        let f = scan(
            br#"{"id":5,"jsonrpc":"2.0","result":{"content":[{"text":"aaa"#,
            br#"a"}], "isError" : true}}"#,
        );
        assert!(f.has_result && f.tail_is_error);
    }

    #[test]
    fn cut_scalars_are_not_taken() {
        assert_eq!(scan(br#"{"jsonrpc":"2.0","id":12"#, b"").id, None);
        assert_eq!(scan(br#"{"method":"tools/ca"#, b"").method, None);
    }

    #[test]
    fn garbage_finds_nothing() {
        assert_eq!(scan(b"\x00\xff garbage", b"junk"), Found::default());
        assert_eq!(scan(b"{{{{", b""), Found::default());
    }
}
