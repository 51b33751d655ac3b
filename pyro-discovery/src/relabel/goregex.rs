//! Go (RE2) regular-expression syntax, translated to the Rust `regex` crate's syntax.
//!
//! Relabel rules are written for Go's `regexp` package, and the two dialects read some
//! patterns differently without any error (see the relabel addendum of the Alloy reference):
//!
//! - `\d`, `\w`, `\s`, `\b` are ASCII-only in Go and Unicode-aware in Rust;
//! - `{` that does not start a valid repetition is a literal in Go and an error in Rust
//!   (`a{,3}`, `a{`);
//! - inside a class, `[`, `&&`, `--` and `~~` are literals in Go and nesting or set operations in
//!   Rust;
//! - `\<`, `\>` are literals in Go and word boundaries in Rust;
//! - `\Q…\E`, octal escapes `\123` and `\p{^Greek}` exist only in Go;
//! - Go refuses stacked repetitions (`a**`, `a{2}*`), repetition counts above 1000, and flags
//!   other than `imsU`, which Rust accepts.
//!
//! [`translate`] rewrites a Go pattern into an equivalent Rust pattern and reports what Go
//! would refuse. Capture groups come out unnamed; their Go names are returned separately, so
//! names Rust would refuse (`(?P<1x>…)`, a name used twice) still work in replacement
//! templates.

/// A translated pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Translated {
    /// The pattern in Rust `regex` syntax.
    pub(crate) pattern: String,
    /// Named groups: (Go name, group index), in order.
    pub(crate) names: Vec<(String, usize)>,
}

const GO_WORD: &str = "0-9A-Za-z_";
const GO_SPACE: &str = "\\t\\n\\x0C\\r ";
const MAX_REPEAT: u32 = 1000;

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    src: &'a str,
    out: String,
    names: Vec<(String, usize)>,
    groups: usize,
}

/// Translates a Go `regexp` pattern to Rust `regex` syntax, or says why Go would reject it.
pub(crate) fn translate(src: &str) -> Result<Translated, String> {
    let mut p = Parser {
        chars: src.char_indices().peekable(),
        src,
        out: String::with_capacity(src.len() + 8),
        names: Vec::new(),
        groups: 0,
    };
    p.run()?;
    Ok(Translated {
        pattern: p.out,
        names: p.names,
    })
}

impl<'a> Parser<'a> {
    fn next(&mut self) -> Option<char> {
        self.chars.next().map(|(_, c)| c)
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().map(|&(_, c)| c)
    }

    fn rest(&mut self) -> &'a str {
        let at = self.chars.peek().map_or(self.src.len(), |&(i, _)| i);
        &self.src[at..]
    }

    fn skip_bytes(&mut self, n: usize) {
        let end = self.chars.peek().map_or(self.src.len(), |&(i, _)| i) + n;
        while self.chars.peek().is_some_and(|&(i, _)| i < end) {
            self.chars.next();
        }
    }

    fn run(&mut self) -> Result<(), String> {
        // Whether the previous item was a repetition operator: Go refuses `a**`.
        let mut after_repeat = false;
        while let Some(c) = self.next() {
            let mut repeat = false;
            match c {
                '\\' => self.escape()?,
                '[' => self.class()?,
                '(' => self.group()?,
                '*' | '+' | '?' => {
                    if after_repeat {
                        return Err(format!("invalid nested repetition operator `{c}`"));
                    }
                    self.out.push(c);
                    self.lazy();
                    repeat = true;
                }
                '{' => {
                    if let Some((text, min, max)) = parse_repeat(self.rest()) {
                        if min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT || m < min) {
                            return Err(format!("invalid repeat count `{{{text}`"));
                        }
                        if after_repeat {
                            return Err(format!("invalid nested repetition operator `{{{text}`"));
                        }
                        self.out.push('{');
                        self.out.push_str(text);
                        let n = text.len();
                        self.skip_bytes(n);
                        self.lazy();
                        repeat = true;
                    } else {
                        self.out.push_str("\\{");
                    }
                }
                '}' => self.out.push_str("\\}"),
                '.' | '^' | '$' | '|' | ')' => self.out.push(c),
                c => self.literal(c),
            }
            after_repeat = repeat;
        }
        Ok(())
    }

    fn lazy(&mut self) {
        if self.peek() == Some('?') {
            self.next();
            self.out.push('?');
        }
    }

    fn literal(&mut self, c: char) {
        let mut buf = [0u8; 4];
        self.out.push_str(&regex::escape(c.encode_utf8(&mut buf)));
    }

    fn group(&mut self) -> Result<(), String> {
        if self.peek() != Some('?') {
            self.groups += 1;
            self.out.push('(');
            return Ok(());
        }
        self.next();
        let rest = self.rest();
        let named = rest
            .strip_prefix("P<")
            .map(|r| (r, 2))
            .or_else(|| rest.strip_prefix('<').map(|r| (r, 1)));
        if let Some((after, prefix)) = named {
            let Some(end) = after.find('>') else {
                return Err(format!("invalid named capture `(?{rest}`"));
            };
            let name = &after[..end];
            if name.is_empty() || !name.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric()) {
                return Err(format!(
                    "invalid named capture `(?{}>`",
                    &rest[..prefix + end]
                ));
            }
            self.groups += 1;
            self.names.push((name.to_owned(), self.groups));
            self.skip_bytes(prefix + end + 1);
            self.out.push('(');
            return Ok(());
        }
        // Flags: `(?flags)` or `(?flags:re)`, flags from `imsU`, at most one `-`, not last.
        let mut flags = String::new();
        let mut negated = false;
        let mut since_dash = 0;
        loop {
            match self.next() {
                Some(c @ ('i' | 'm' | 's' | 'U')) => {
                    flags.push(c);
                    since_dash += 1;
                }
                Some('-') if !negated => {
                    negated = true;
                    since_dash = 0;
                    flags.push('-');
                }
                Some(end @ (')' | ':')) => {
                    if negated && since_dash == 0 {
                        return Err(format!(
                            "invalid or unsupported Perl syntax `(?{flags}{end}`"
                        ));
                    }
                    if flags.is_empty() && end == ')' {
                        // `(?)` changes nothing in Go; Rust refuses it.
                        return Ok(());
                    }
                    self.out.push_str("(?");
                    self.out.push_str(&flags);
                    self.out.push(end);
                    return Ok(());
                }
                Some(c) => {
                    return Err(format!("invalid or unsupported Perl syntax `(?{flags}{c}`"));
                }
                None => return Err("missing closing )".to_owned()),
            }
        }
    }

    fn class(&mut self) -> Result<(), String> {
        self.out.push('[');
        if self.peek() == Some('^') {
            self.next();
            self.out.push('^');
        }
        let mut first = true;
        loop {
            let Some(c) = self.next() else {
                return Err("missing closing ]".to_owned());
            };
            if c == ']' && !first {
                self.out.push(']');
                return Ok(());
            }
            first = false;
            if c == '[' && self.peek() == Some(':') {
                let rest = self.rest();
                // As Go's parseNamedClass: the closing `:]` is looked for after the opening
                // `[:` (in `[:]`, the `:]` is the opening's own colon).
                if let Some(end) = rest.get(1..).and_then(|r| r.find(":]")).map(|e| e + 1) {
                    let name = &rest[1..end];
                    let bare = name.strip_prefix('^').unwrap_or(name);
                    if POSIX_CLASSES.contains(&bare) {
                        self.out.push_str("[:");
                        self.out.push_str(name);
                        self.out.push_str(":]");
                        self.skip_bytes(end + 2);
                        continue;
                    }
                    if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_alphabetic()) {
                        return Err(format!("invalid character class range `[:{name}:]`"));
                    }
                }
            }
            let lo = self.class_item(c)?;
            if let ClassItem::Set(set) = lo {
                // `\d`, `\pL`… never start a range: in Go, `[\d-z]` is digits, `-` and `z`.
                self.out.push_str(&set);
                continue;
            }
            // A range `lo-hi`, unless the `-` is the last character of the class.
            if self.peek() == Some('-') && !self.rest().starts_with("-]") {
                self.next();
                let Some(hc) = self.next() else {
                    return Err("missing closing ]".to_owned());
                };
                let hi = self.class_item(hc)?;
                match (lo, hi) {
                    (ClassItem::Char(lo), ClassItem::Char(hi)) if lo <= hi => {
                        self.push_class_char(lo);
                        self.out.push('-');
                        self.push_class_char(hi);
                    }
                    _ => return Err("invalid character class range".to_owned()),
                }
            } else {
                match lo {
                    ClassItem::Char(c) => self.push_class_char(c),
                    ClassItem::Set(s) => self.out.push_str(&s),
                }
            }
        }
    }

    fn push_class_char(&mut self, c: char) {
        self.literal(c);
    }

    /// One class member starting with `c` (already consumed).
    fn class_item(&mut self, c: char) -> Result<ClassItem, String> {
        if c != '\\' {
            return Ok(ClassItem::Char(c));
        }
        let Some(e) = self.next() else {
            return Err("trailing backslash at end of expression".to_owned());
        };
        Ok(match e {
            'd' => ClassItem::Set("0-9".to_owned()),
            'D' => ClassItem::Set("[^0-9]".to_owned()),
            'w' => ClassItem::Set(GO_WORD.to_owned()),
            'W' => ClassItem::Set(format!("[^{GO_WORD}]")),
            's' => ClassItem::Set(GO_SPACE.to_owned()),
            'S' => ClassItem::Set(format!("[^{GO_SPACE}]")),
            'p' | 'P' => ClassItem::Set(self.unicode_class(e)?),
            e => ClassItem::Char(self.char_escape(e)?),
        })
    }

    fn escape(&mut self) -> Result<(), String> {
        let Some(e) = self.next() else {
            return Err("trailing backslash at end of expression".to_owned());
        };
        match e {
            'd' => self.out.push_str("[0-9]"),
            'D' => self.out.push_str("[^0-9]"),
            'w' => self.out.push_str(&format!("[{GO_WORD}]")),
            'W' => self.out.push_str(&format!("[^{GO_WORD}]")),
            's' => self.out.push_str(&format!("[{GO_SPACE}]")),
            'S' => self.out.push_str(&format!("[^{GO_SPACE}]")),
            'b' => self.out.push_str("(?-u:\\b)"),
            'B' => self.out.push_str("(?-u:\\B)"),
            'A' => self.out.push_str("\\A"),
            'z' => self.out.push_str("\\z"),
            'C' => self.out.push_str("(?s:.)"),
            'p' | 'P' => {
                let s = self.unicode_class(e)?;
                self.out.push_str(&s);
            }
            'Q' => {
                let rest = self.rest();
                // Unterminated, `\Q` would swallow the `)$` Alloy wraps every rule in, so Go
                // reports a missing `)`.
                let Some(end) = rest.find("\\E") else {
                    return Err("missing closing ) (unterminated \\Q)".to_owned());
                };
                let (lit, skip) = (&rest[..end], end + 2);
                let escaped = regex::escape(lit);
                self.skip_bytes(skip);
                self.out.push_str(&escaped);
            }
            e => {
                let c = self.char_escape(e)?;
                self.literal(c);
            }
        }
        Ok(())
    }

    /// `\pN`, `\p{Name}`, `\p{^Name}` (and `\P…`), as Rust syntax.
    fn unicode_class(&mut self, p: char) -> Result<String, String> {
        let Some(c) = self.next() else {
            return Err(format!("invalid character class range `\\{p}`"));
        };
        if c != '{' {
            return Ok(format!("\\{p}{c}"));
        }
        let rest = self.rest();
        let Some(end) = rest.find('}') else {
            return Err(format!("invalid character class range `\\{p}{{{rest}`"));
        };
        let name = rest[..end].to_owned();
        self.skip_bytes(end + 1);
        let (p, name) = match name.strip_prefix('^') {
            Some(n) => (if p == 'p' { 'P' } else { 'p' }, n.to_owned()),
            None => (p, name),
        };
        Ok(format!("\\{p}{{{name}}}"))
    }

    /// A single-character escape (after the backslash): control characters, octal, hex and
    /// escaped punctuation.
    fn char_escape(&mut self, e: char) -> Result<char, String> {
        Ok(match e {
            'a' => '\x07',
            'f' => '\x0C',
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            'v' => '\x0B',
            '0'..='7' => {
                // Go: `\1`–`\7` alone would be a backreference (unsupported); `\0` and two- or
                // three-digit forms are octal.
                if e != '0' && !self.peek().is_some_and(|c| ('0'..='7').contains(&c)) {
                    return Err(format!("invalid escape sequence `\\{e}`"));
                }
                let mut v = e as u32 - '0' as u32;
                for _ in 0..2 {
                    match self.peek() {
                        Some(c @ '0'..='7') => {
                            self.next();
                            v = v * 8 + (c as u32 - '0' as u32);
                        }
                        _ => break,
                    }
                }
                char::from_u32(v).ok_or_else(|| format!("invalid escape sequence `\\{e}`"))?
            }
            'x' => {
                let rest = self.rest();
                let (hex, skip) = if let Some(r) = rest.strip_prefix('{') {
                    let end = r
                        .find('}')
                        .ok_or_else(|| "invalid escape sequence `\\x{`".to_owned())?;
                    (&r[..end], end + 2)
                } else {
                    (rest.get(..2).unwrap_or(rest), 2)
                };
                let valid = !hex.is_empty()
                    && (skip != 2 || hex.len() == 2)
                    && hex.bytes().all(|b| b.is_ascii_hexdigit());
                let c = u32::from_str_radix(hex, 16)
                    .ok()
                    .filter(|_| valid)
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("invalid escape sequence `\\x{hex}`"))?;
                self.skip_bytes(skip);
                c
            }
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => c,
            c => return Err(format!("invalid escape sequence `\\{c}`")),
        })
    }
}

enum ClassItem {
    Char(char),
    Set(String),
}

const POSIX_CLASSES: [&str; 14] = [
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

/// Parses a Go repetition `{n}`, `{n,}`, `{n,m}` at the start of `s` (just after `{`): the text
/// up to and including `}`, the minimum and the maximum.
fn parse_repeat(s: &str) -> Option<(&str, u32, Option<u32>)> {
    let end = s.find('}')?;
    let body = &s[..end];
    let digits = |d: &str| -> Option<u32> {
        if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Anything past u32 is over the limit anyway.
        Some(d.parse::<u32>().unwrap_or(u32::MAX))
    };
    let (min, max) = match body.split_once(',') {
        None => {
            let n = digits(body)?;
            (n, Some(n))
        }
        Some((a, "")) => (digits(a)?, None),
        Some((a, b)) => (digits(a)?, Some(digits(b)?)),
    };
    Some((&s[..=end], min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rust(p: &str) -> String {
        translate(p).unwrap().pattern
    }

    fn matches(p: &str, s: &str) -> bool {
        regex::Regex::new(&format!("^(?s:{})$", rust(p)))
            .unwrap()
            .is_match(s)
    }

    #[test]
    fn perl_classes_are_ascii() {
        assert!(matches(r"\d+", "0123456789"));
        assert!(!matches(r"\d", "٣")); // ARABIC-INDIC DIGIT THREE
        assert!(!matches(r"\w", "é"));
        assert!(matches(r"\W", "é"));
        assert!(!matches(r"\s", "\u{a0}"));
        assert!(!matches(r"\s", "\x0B")); // Go's \s has no vertical tab
        assert!(matches(r"[\d\s]+", "1 2\t3"));
        assert!(matches(r"[^\D]", "7"));
        assert!(!matches(r"[^\D]", "x"));
        // \b is an ASCII word boundary: é is not a word character in Go.
        assert!(matches(r"(?s:.*)\bx", "éx"));
    }

    #[test]
    fn a_colon_right_after_the_bracket_does_not_close_a_named_class() {
        // Found by the relabel fuzz target: `[:]` made the name range end before it started.
        assert!(matches("[[:]+", "[:["));
        // The fuzzer's input: whatever the answer, no panic.
        let _ = translate("(?P<first>[[:]lpha:]]+)-(\\d+)");
        assert!(matches("[[:alpha:]]+", "abc"));
    }

    #[test]
    fn braces_that_are_not_repetitions_are_literal() {
        assert!(matches("a{,3}", "a{,3}"));
        assert!(matches("a{", "a{"));
        assert!(matches("a{x}", "a{x}"));
        assert!(matches("x}", "x}"));
        assert!(matches("a{2}", "aa"));
        assert!(matches("a{2,}", "aaaa"));
        assert!(matches("a{1,2}?b", "ab"));
    }

    #[test]
    fn class_literals_and_set_operators() {
        assert!(matches("[[]", "["));
        assert!(matches("[a&&b]+", "a&b"));
        assert!(matches("[a~~b]+", "~"));
        assert!(matches("[]a]+", "]a"));
        assert!(matches("[^]a]", "b"));
        assert!(matches("[a-]+", "-a"));
        assert!(matches("[[:alpha:]]+", "ab"));
        assert!(matches("[[:^alpha:]]", "1"));
        assert!(matches(r"[\pL]+", "éa"));
    }

    #[test]
    fn go_only_escapes() {
        assert!(matches(r"\<a\>", "<a>"));
        assert!(matches(r"\Q.*+\E", ".*+"));
        assert!(matches(r"\101", "A"));
        assert!(matches(r"\x41\x{42}", "AB"));
        assert!(matches(r"\p{^Greek}", "a"));
        assert!(!matches(r"\p{^Greek}", "α"));
        assert!(matches(r"\p{Greek}", "α"));
    }

    #[test]
    fn go_rejections() {
        for bad in [
            "a**",
            "a+*",
            "a{2}*",
            "a*??",
            "a{1001}",
            "a{3,2}",
            "(?x)a",
            "(?i-)a",
            "(?-)",
            "(?P=n)",
            r"\1",
            r"\8",
            r"\e",
            "[a",
            "(?P<a-b>x)",
            "[z-a]",
            r"[a-\d]",
            r"\Qa.b",
        ] {
            assert!(translate(bad).is_err(), "{bad:?} should be rejected");
        }
        for good in [
            "a*?",
            "(a*)*",
            "a{2}?",
            "(?i)a",
            "(?i-s:a)",
            "(?U)a*",
            "(?:a)",
            "(?)a",
            "(?P<a>x)(?P<a>y)",
            r"[\d-z]",
        ] {
            assert!(translate(good).is_ok(), "{good:?} should be accepted");
        }
    }

    #[test]
    fn named_groups_are_renumbered() {
        let t = translate("(?P<1x>a)(b)(?<name>c)").unwrap();
        assert_eq!(t.pattern, "(a)(b)(c)");
        assert_eq!(t.names, [("1x".to_owned(), 1), ("name".to_owned(), 3)]);
    }
}
