//! Redaction of known secret values from everything a caller or a log sees.
//!
//! Terraform hides values it knows are sensitive; this is the second line: the values of
//! pass-through credentials, of variables the configuration marks sensitive, and of variables
//! whose names say they are secrets are replaced wherever they appear in text or structured
//! results, including in terraform's own error messages.
//!
//! Code that runs inside terraform (a `local-exec`, a provider, an external data source) can
//! print a value in another shape than the one it was given, so each secret is matched in the
//! shapes such code reaches for without effort:
//!
//! - as written, and in any letter case (matching ignores ASCII case);
//! - JSON-escaped (serde's escaping, Go's `\u003c`/`\u003e`/`\u0026` escaping, and the
//!   all-ASCII `\uXXXX` escaping);
//! - URL-encoded (reserved bytes escaped, `+` for space, and every byte escaped);
//! - hex (either case);
//! - base64, standard and URL-safe alphabets, at each of the three byte alignments, so a secret
//!   inside a longer base64 blob (`echo "token=$T" | base64`) is found too: the characters that
//!   depend only on the secret's bytes are masked (the one or two at each edge that also depend on
//!   neighbouring bytes stay, and can carry at most a few bits of the secret);
//! - spaced out: the secret's letters and digits in order with up to
//!   [`MAX_EXTRA_SEPARATORS`] ASCII punctuation or white-space characters between neighbours
//!   (beyond the secret's own punctuation there), so `s e c r e t`, `s-e-c-r-e-t`, a base64 or
//!   hex form wrapped over lines, or `s, e, c` are masked. Only for values with at least
//!   [`MIN_SPACED_LEN`] letters and digits, since short values would match by chance.
//!
//! Lengths: values shorter than [`MIN_SECRET_LEN`] characters are ignored altogether; the hex and
//! base64 shapes are used only for values of at least [`MIN_ENCODED_LEN`] bytes (and base64
//! fragments shorter than that are dropped), since a short encoded fragment would match random
//! text. What is not covered, and cannot be in general: a transformation the code chose on
//! purpose (reversed, encrypted, hashed, rot13, one character per line with long gaps, split
//! across separate results). Redaction is the second line; the sandbox and the environment
//! allowlist are the first.
//!
//! Cost: one Aho-Corasick pass over the text for all shapes of all secrets, plus, when some
//! secret is long enough for spaced matching, one pass over the text's letters and digits. Both
//! are linear in the text (see the `a_mebibyte_is_redacted_quickly` test).

use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde_json::Value;

pub const MASK: &str = "[REDACTED]";

/// Values shorter than this (in characters) are not treated as secrets: masking every "1" or
/// "on" in a result would destroy it, and such values give an attacker nothing.
pub const MIN_SECRET_LEN: usize = 4;

/// Values shorter than this (in bytes) are not matched in their hex and base64 shapes, and base64
/// fragments shorter than this are dropped: a short encoded fragment matches random text.
pub const MIN_ENCODED_LEN: usize = 6;

/// Values with fewer letters and digits than this are not matched spaced out.
pub const MIN_SPACED_LEN: usize = 8;

/// How many separator characters (ASCII, neither letter nor digit) may stand between two
/// neighbouring characters of a spaced-out secret, beyond those the secret itself has there.
pub const MAX_EXTRA_SEPARATORS: usize = 2;

/// Variable names that are treated as secret whatever the configuration says.
pub fn name_looks_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "private_key",
        "credential",
        "access_key",
        "auth",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// The secrets of a call, and the matcher built from them (lazily, and again after an `add`).
#[derive(Default, Clone)]
pub struct Redactor {
    /// The values as given (each at least [`MIN_SECRET_LEN`] characters), in the order added.
    sources: Vec<String>,
    compiled: OnceLock<Option<Arc<Compiled>>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.sources.len())
    }
}

/// The automata for one set of secrets.
struct Compiled {
    /// Every shape of every secret, matched in the text as it is (ASCII case ignored).
    direct: AhoCorasick,
    /// Letters and digits (lower-cased) of the long shapes, matched in the text's letters and
    /// digits; `gaps[p][i]` is how many other characters the shape itself has between its
    /// kept characters `i` and `i + 1`.
    spaced: Option<(AhoCorasick, Vec<Vec<u8>>)>,
}

impl Redactor {
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// Adds a secret string. Short values are ignored (see [`MIN_SECRET_LEN`]).
    pub fn add(&mut self, secret: &str) {
        if secret.chars().count() >= MIN_SECRET_LEN && !self.sources.iter().any(|s| s == secret) {
            self.sources.push(secret.to_string());
            self.compiled = OnceLock::new();
        }
    }

    /// Adds several secret strings.
    pub fn add_all<'a>(&mut self, secrets: impl IntoIterator<Item = &'a String>) {
        for s in secrets {
            self.add(s);
        }
    }

    /// Adds every scalar inside a JSON value (a variable's value may be a map of secrets).
    pub fn add_value(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.add(s),
            Value::Number(n) => self.add(&n.to_string()),
            Value::Array(a) => a.iter().for_each(|x| self.add_value(x)),
            Value::Object(o) => o.values().for_each(|x| self.add_value(x)),
            Value::Bool(_) | Value::Null => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The secret values as given, for remembering them beyond this call.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    fn compiled(&self) -> Option<&Compiled> {
        self.compiled
            .get_or_init(|| Compiled::build(&self.sources).map(Arc::new))
            .as_deref()
    }

    /// The text with every shape of every secret replaced by [`MASK`].
    pub fn text(&self, s: &str) -> String {
        let Some(c) = self.compiled() else {
            return s.to_string();
        };
        let spans = c.spans(s);
        if spans.is_empty() {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut at = 0;
        for (start, end) in spans {
            out.push_str(&s[at..start]);
            out.push_str(MASK);
            at = end;
        }
        out.push_str(&s[at..]);
        out
    }

    /// Redacts every string (and key) inside a JSON value; a number equal to a secret becomes
    /// the mask.
    pub fn value(&self, v: &mut Value) {
        if self.sources.is_empty() {
            return;
        }
        match v {
            Value::String(s) => {
                let masked = self.text(s);
                if masked != *s {
                    *s = masked;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.value(x)),
            Value::Object(o) => {
                // Keys can carry values too (a map variable's keys).
                let keys: Vec<String> = o.keys().cloned().collect();
                for k in keys {
                    if let Some(mut x) = o.remove(&k) {
                        self.value(&mut x);
                        o.insert(self.text(&k), x);
                    }
                }
            }
            Value::Number(n) => {
                let t = n.to_string();
                if self.text(&t) != t {
                    *v = Value::String(MASK.into());
                }
            }
            _ => {}
        }
    }
}

impl Compiled {
    fn build(sources: &[String]) -> Option<Compiled> {
        if sources.is_empty() {
            return None;
        }
        let mut direct: Vec<Vec<u8>> = Vec::new();
        let mut spaced: Vec<Vec<u8>> = Vec::new();
        let mut gaps: Vec<Vec<u8>> = Vec::new();
        for s in sources {
            for form in shapes(s) {
                let (kept, form_gaps) = project(&form);
                // A short value's encodings are long enough, but their letters and digits
                // (the hex inside `%74%72%75%65`) would be as weak as the short value itself.
                if s.len() >= MIN_ENCODED_LEN
                    && kept.len() >= MIN_SPACED_LEN
                    && !spaced.contains(&kept)
                {
                    spaced.push(kept);
                    gaps.push(form_gaps);
                }
                if !direct.contains(&form) {
                    direct.push(form);
                }
            }
        }
        let direct = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(&direct)
            .ok()?;
        let spaced = if spaced.is_empty() {
            None
        } else {
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&spaced)
                .ok()
                .map(|ac| (ac, gaps))
        };
        Some(Compiled { direct, spaced })
    }

    /// The byte ranges to mask, sorted and merged, each on character boundaries.
    fn spans(&self, s: &str) -> Vec<(usize, usize)> {
        let mut spans: Vec<(usize, usize)> = self
            .direct
            .find_iter(s)
            .map(|m| (m.start(), m.end()))
            .collect();
        if let Some((ac, gaps)) = &self.spaced
            && s.len() < u32::MAX as usize
        {
            let bytes = s.as_bytes();
            let mut kept = Vec::with_capacity(bytes.len());
            let mut at: Vec<u32> = Vec::with_capacity(bytes.len());
            for (i, &b) in bytes.iter().enumerate() {
                if keeps(b) {
                    kept.push(b.to_ascii_lowercase());
                    at.push(i as u32);
                }
            }
            if kept.len() >= MIN_SPACED_LEN {
                for m in ac.find_iter(&kept) {
                    let own = &gaps[m.pattern().as_usize()];
                    let close = (m.start()..m.end() - 1).zip(own).all(|(k, &g)| {
                        (at[k + 1] - at[k] - 1) as usize
                            <= g as usize + MAX_EXTRA_SEPARATORS * (g as usize + 1)
                    });
                    if close {
                        spans.push((at[m.start()] as usize, at[m.end() - 1] as usize + 1));
                    }
                }
            }
        }
        spans.retain(|&(a, b)| s.is_char_boundary(a) && s.is_char_boundary(b));
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (a, b) in spans {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        merged
    }
}

/// Bytes that count as a secret's "characters" for spaced matching: ASCII letters and digits,
/// and every byte of a non-ASCII character.
fn keeps(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

/// A shape's kept bytes (lower-cased) and the number of other bytes between neighbours.
fn project(form: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut kept = Vec::with_capacity(form.len());
    let mut gaps = Vec::new();
    let mut run: usize = 0;
    for &b in form {
        if keeps(b) {
            if !kept.is_empty() {
                gaps.push(run.min(u8::MAX as usize) as u8);
            }
            kept.push(b.to_ascii_lowercase());
            run = 0;
        } else {
            run += 1;
        }
    }
    (kept, gaps)
}

/// Every shape a secret is matched in (see the module documentation).
fn shapes(s: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![s.as_bytes().to_vec()];
    let mut push = |f: Vec<u8>| {
        if f.len() >= MIN_SECRET_LEN && !out.contains(&f) {
            out.push(f);
        }
    };
    let json = json_escaped(s);
    push(json.clone().into_bytes());
    push(
        json.replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
            .into_bytes(),
    );
    push(ascii_json_escaped(&json).into_bytes());
    push(url_encoded(s.as_bytes(), false));
    push(url_encoded(s.as_bytes(), true));
    push(
        s.bytes()
            .flat_map(|b| format!("%{b:02x}").into_bytes())
            .collect(),
    );
    let bytes = s.as_bytes();
    if bytes.len() >= MIN_ENCODED_LEN {
        push(hex::encode(bytes).into_bytes());
        for alphabet in [BASE64_STD, BASE64_URL] {
            for offset in 0..3 {
                let core = base64_core(bytes, offset, alphabet);
                if core.len() >= MIN_ENCODED_LEN {
                    push(core);
                }
            }
        }
    }
    out
}

/// The string as it appears inside a JSON string literal (serde's escaping).
fn json_escaped(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_string()
}

/// JSON escaping with every non-ASCII character as `\uXXXX` (Python's default).
fn ascii_json_escaped(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Percent-encoding of everything but RFC 3986's unreserved bytes; `plus` writes space as `+`.
fn url_encoded(bytes: &[u8], plus: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else if plus && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

const BASE64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Up to three bytes as base64's 24-bit group (missing bytes are zero).
fn group24(chunk: &[u8]) -> u32 {
    let at = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
    (at(0) << 16) | (at(1) << 8) | at(2)
}

/// The base64 characters that depend only on `bytes` when they start `offset` bytes into a
/// 3-byte group: the secret's fragment in any base64 text that contains it at that alignment.
fn base64_core(bytes: &[u8], offset: usize, alphabet: &[u8; 64]) -> Vec<u8> {
    let mut input = vec![0u8; offset];
    input.extend_from_slice(bytes);
    let mut enc = Vec::with_capacity(input.len() * 4 / 3 + 4);
    for chunk in input.chunks(3) {
        let n = group24(chunk);
        for i in 0..4 {
            enc.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
        }
    }
    // Character i covers bits [6i, 6i + 6): keep those entirely inside the secret's bits.
    let start = (8 * offset).div_ceil(6);
    let end = (8 * input.len()) / 6;
    enc.get(start..end).map(<[u8]>::to_vec).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A plain base64 encoder with padding, to check against.
    fn b64(alphabet: &[u8; 64], data: &[u8]) -> String {
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = group24(chunk);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn masks_text_and_values() {
        let mut r = Redactor::new();
        r.add("hunter2-secret");
        r.add("on");
        r.add_value(&json!({"k": ["nested-secret", 123456789]}));
        assert_eq!(r.text("pw=hunter2-secret;on"), "pw=[REDACTED];on");
        let mut v = json!({"a": "x nested-secret y", "n": 123456789, "hunter2-secret": 1});
        r.value(&mut v);
        assert_eq!(
            v,
            json!({"a": "x [REDACTED] y", "n": "[REDACTED]", "[REDACTED]": 1})
        );
    }

    #[test]
    fn longest_secret_wins() {
        let mut r = Redactor::new();
        r.add("abcd");
        r.add("abcdefgh");
        assert_eq!(r.text("abcdefgh"), "[REDACTED]");
        assert_eq!(r.text("xabcdy abcdefghz"), "x[REDACTED]y [REDACTED]z");
    }

    #[test]
    fn escaped_forms_are_masked() {
        let mut r = Redactor::new();
        r.add_value(&json!("quote\"inside"));
        assert_eq!(r.text(r#"value "quote\"inside""#), r#"value "[REDACTED]""#);
        let mut r = Redactor::new();
        r.add("a<b>&c-long");
        assert_eq!(r.text(r#""a\u003cb\u003e\u0026c-long""#), r#""[REDACTED]""#);
        let mut r = Redactor::new();
        r.add("pässwörd-1");
        assert_eq!(
            r.text(r#"{"v":"p\u00e4ssw\u00f6rd-1"}"#),
            r#"{"v":"[REDACTED]"}"#
        );
    }

    #[test]
    fn case_variants_are_masked() {
        let mut r = Redactor::new();
        r.add("tok-0123456789-secret");
        assert_eq!(r.text("TOK-0123456789-SECRET"), "[REDACTED]");
        assert_eq!(r.text("Tok-0123456789-Secret!"), "[REDACTED]!");
    }

    #[test]
    fn url_and_hex_forms_are_masked() {
        let secret = "p@ss w/rd+42";
        let mut r = Redactor::new();
        r.add(secret);
        for form in [
            "p%40ss%20w%2Frd%2B42".to_string(),
            "p%40ss+w%2Frd%2B42".to_string(),
            "p%40ss%20w%2frd%2b42".to_string(),
            secret
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect::<String>(),
            hex::encode(secret),
            hex::encode(secret).to_uppercase(),
        ] {
            let t = r.text(&format!("url=?x={form}&y"));
            assert_eq!(t, "url=?x=[REDACTED]&y", "{form}");
        }
    }

    #[test]
    fn base64_at_every_alignment_and_in_both_alphabets() {
        let secret = b"tok-0123456789-secret";
        let mut r = Redactor::new();
        r.add(std::str::from_utf8(secret).unwrap());
        for alphabet in [BASE64_STD, BASE64_URL] {
            for prefix in ["", "a", "ab", "abc", "token="] {
                for suffix in ["", "\n", "x", "xy"] {
                    let mut data = prefix.as_bytes().to_vec();
                    data.extend_from_slice(secret);
                    data.extend_from_slice(suffix.as_bytes());
                    let enc = b64(alphabet, &data);
                    let masked = r.text(&enc);
                    assert!(
                        masked.contains(MASK),
                        "{prefix:?}{suffix:?}: {enc} → {masked}"
                    );
                    // At most two characters of the encoding stay on either side of the secret.
                    let left = masked.find(MASK).unwrap();
                    let right = masked.len() - left - MASK.len();
                    assert!(left <= prefix.len() * 4 / 3 + 2, "{enc} → {masked}");
                    assert!(right <= suffix.len() * 4 / 3 + 4, "{enc} → {masked}");
                }
            }
        }
        // Wrapped over lines (coreutils base64 wraps at 76 columns).
        let long = "A".repeat(60) + "tok-0123456789-secret";
        let enc = b64(BASE64_STD, long.as_bytes());
        let wrapped = format!("{}\n{}", &enc[..76], &enc[76..]);
        assert!(r.text(&wrapped).contains(MASK), "{wrapped}");
    }

    #[test]
    fn spaced_out_secrets_are_masked() {
        let mut r = Redactor::new();
        r.add("tok-0123456789-secret");
        for spaced in [
            "t o k - 0 1 2 3 4 5 6 7 8 9 - s e c r e t",
            "t.o.k.0.1.2.3.4.5.6.7.8.9.s.e.c.r.e.t",
            "T, O, K, -, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, -, S, E, C, R, E, T",
            "t\no\nk\n-\n0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n-\ns\ne\nc\nr\ne\nt",
            "tok0123456789secret",
        ] {
            assert_eq!(r.text(&format!("<{spaced}>")), "<[REDACTED]>", "{spaced}");
        }
        // Spaced hex too.
        let hex_spaced: String = hex::encode("tok-0123456789-secret")
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(r.text(&hex_spaced), MASK, "{hex_spaced}");
        // Far apart is not spaced out.
        let far = "t    o    k    0    1    2    3    4    5    6    7    8    9";
        assert_eq!(r.text(far), far);
    }

    #[test]
    fn short_values_mask_little() {
        let mut r = Redactor::new();
        r.add("abc");
        r.add("true");
        assert_eq!(r.text("abc true TRUE"), "abc [REDACTED] [REDACTED]");
        // A four-byte value has no hex or base64 shape, and is not matched spaced out.
        assert_eq!(r.text(&hex::encode("true")), hex::encode("true"));
        assert_eq!(r.text("t r u e"), "t r u e");
    }

    #[test]
    fn non_ascii_and_boundaries() {
        let mut r = Redactor::new();
        r.add("ключ-секрет-42");
        assert_eq!(r.text("«ключ-секрет-42»"), "«[REDACTED]»");
        assert_eq!(r.text("к л ю ч с е к р е т 4 2"), "[REDACTED]");
        let mut v = json!({"n": 12345678});
        r.add("12345678");
        r.value(&mut v);
        assert_eq!(v, json!({"n": MASK}));
    }

    #[test]
    fn a_mebibyte_is_redacted_quickly() {
        let mut r = Redactor::new();
        for i in 0..20 {
            r.add(&format!("credential-{i:02}-0123456789abcdef"));
        }
        // Text that looks like logs and base64, with near misses everywhere.
        let mut text = String::with_capacity(1 << 20);
        let mut i = 0u64;
        while text.len() < (1 << 20) {
            text.push_str(&format!(
                "line {i}: credential-{:02}-0123456789abcde c r e d e n t i a l QUJDREVGR0g= {}\n",
                i % 20,
                "a-b".repeat(8)
            ));
            i += 1;
        }
        text.push_str("credential-07-0123456789abcdef");
        let started = std::time::Instant::now();
        let out = r.text(&text);
        let took = started.elapsed();
        assert!(out.ends_with(MASK));
        assert_eq!(out.matches(MASK).count(), 1);
        // About 1.6 s unoptimized and 50-100 ms in release; the bound is generous for a loaded
        // machine and still catches anything worse than linear (that would take minutes).
        assert!(took.as_secs_f64() < 15.0, "1 MiB took {took:?}");
        eprintln!("redacting 1 MiB with 20 secrets took {took:?}");
    }

    #[test]
    fn secret_names() {
        assert!(name_looks_secret("db_password"));
        assert!(name_looks_secret("API_KEY"));
        assert!(!name_looks_secret("region"));
    }
}
