//! Replacement templates with Go `regexp.Expand` semantics.
//!
//! `$$` is a literal `$`; `$name` takes the longest run of letters, digits and `_` as the name
//! (so `$1x` is the group named `1x`, which usually does not exist and expands to nothing —
//! write `${1}x`); `${name}` delimits the name; a name made of digits without a leading zero is
//! a group number; a `$` that starts no valid reference is kept as text. A reference to a group
//! that does not exist or did not take part in the match expands to nothing.

use regex::Captures;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Group(usize),
    /// A named reference: the groups with that name (Go allows a name twice); the first that
    /// took part in the match is used. Empty when the name does not exist.
    Named(Vec<usize>),
}

/// A template parsed once, expanded per match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    segments: Vec<Segment>,
}

impl Template {
    /// Parses `template` against a regex's named groups (`names`: name → group index).
    pub(crate) fn parse(template: &str, names: &[(String, usize)]) -> Self {
        let mut segments = Vec::new();
        let mut lit = String::new();
        let mut rest = template;
        while let Some(at) = rest.find('$') {
            lit.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            if let Some(r) = rest.strip_prefix('$') {
                lit.push('$');
                rest = r;
                continue;
            }
            let Some((name, after)) = extract(rest) else {
                lit.push('$');
                continue;
            };
            rest = after;
            if !lit.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut lit)));
            }
            segments.push(match group_number(name) {
                Some(n) => Segment::Group(n),
                None => Segment::Named(
                    names
                        .iter()
                        .filter(|(n, _)| n == name)
                        .map(|&(_, i)| i)
                        .collect(),
                ),
            });
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            segments.push(Segment::Literal(lit));
        }
        Self { segments }
    }

    /// Appends the expansion for `caps` to `out`.
    pub(crate) fn expand_into(&self, caps: &Captures<'_>, out: &mut String) {
        for s in &self.segments {
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Group(i) => {
                    if let Some(m) = caps.get(*i) {
                        out.push_str(m.as_str());
                    }
                }
                Segment::Named(groups) => {
                    if let Some(m) = groups.iter().find_map(|&i| caps.get(i)) {
                        out.push_str(m.as_str());
                    }
                }
            }
        }
    }

    /// Appends the expansion when group 0 and group 1 are both the whole `val` (the default
    /// regex `(.*)`, evaluated without running it).
    pub(crate) fn expand_whole(&self, val: &str, out: &mut String) {
        for s in &self.segments {
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Group(0 | 1) => out.push_str(val),
                Segment::Group(_) | Segment::Named(_) => {}
            }
        }
    }
}

/// Go's `extract`: the name after a `$` (braced or not) and the rest, or `None` when malformed.
fn extract(s: &str) -> Option<(&str, &str)> {
    let (brace, s) = match s.strip_prefix('{') {
        Some(r) => (true, r),
        None => (false, s),
    };
    // Go: unicode.IsLetter || unicode.IsDigit || '_'.
    let end = s
        .char_indices()
        .find(|&(_, c)| !(c.is_alphabetic() || c.is_numeric() || c == '_'))
        .map_or(s.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &s[..end];
    if brace {
        let rest = s[end..].strip_prefix('}')?;
        return Some((name, rest));
    }
    Some((name, &s[end..]))
}

/// A group number: ASCII digits, no leading zero (Go also caps the value at 1e8).
fn group_number(name: &str) -> Option<usize> {
    if !name.bytes().all(|b| b.is_ascii_digit()) || (name.len() > 1 && name.starts_with('0')) {
        return None;
    }
    name.parse::<usize>().ok().filter(|&n| n < 100_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(re: &str, names: &[(&str, usize)], template: &str, val: &str) -> String {
        let names: Vec<_> = names.iter().map(|&(n, i)| (n.to_owned(), i)).collect();
        let t = Template::parse(template, &names);
        let re = regex::Regex::new(re).unwrap();
        let caps = re.captures(val).unwrap();
        let mut out = String::new();
        t.expand_into(&caps, &mut out);
        out
    }

    #[test]
    fn go_expand_naming_rules() {
        let re = "^(a)(b)(c)$";
        assert_eq!(expand(re, &[], "$1", "abc"), "a");
        assert_eq!(expand(re, &[], "${1}x", "abc"), "ax");
        // `$1x` is the group named `1x`: empty.
        assert_eq!(expand(re, &[], "$1x", "abc"), "");
        assert_eq!(expand(re, &[], "$1-$2", "abc"), "a-b");
        assert_eq!(expand(re, &[], "$$1", "abc"), "$1");
        assert_eq!(expand(re, &[], "$", "abc"), "$");
        assert_eq!(expand(re, &[], "a$-b", "abc"), "a$-b");
        assert_eq!(expand(re, &[], "${1", "abc"), "${1");
        assert_eq!(expand(re, &[], "$0", "abc"), "abc");
        // Leading zero: a name, not a number.
        assert_eq!(expand(re, &[], "$01", "abc"), "");
        // Non-ASCII letters extend the name, as unicode.IsLetter does in Go.
        assert_eq!(expand(re, &[], "$1é", "abc"), "");
        assert_eq!(expand(re, &[], "$9", "abc"), "");
        assert_eq!(
            expand("^(a)(?:x)?(b)$", &[("first", 1)], "$first.${2}", "ab"),
            "a.b"
        );
        assert_eq!(expand("^(a)?b$", &[], "[$1]", "b"), "[]");
        // A name used twice: the first group that took part.
        let twice = [("n", 1), ("n", 2)];
        assert_eq!(expand("^(?:(a)|(b))$", &twice, "$n", "b"), "b");
        assert_eq!(expand("^(a)(b)$", &twice, "$n", "ab"), "a");
    }
}
