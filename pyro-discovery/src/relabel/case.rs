//! Go's `strings.ToLower`/`ToUpper`, which the `lowercase`/`uppercase` actions follow.

/// Go's `strings.ToLower`: one character to one character (`unicode.ToLower`), no context.
pub fn go_to_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars()
        .map(|c| {
            let mut l = c.to_lowercase();
            match (l.next(), l.next()) {
                (Some(one), None) => one,
                // U+0130 LATIN CAPITAL LETTER I WITH DOT ABOVE: simple mapping is `i`.
                _ if c == '\u{130}' => 'i',
                _ => c,
            }
        })
        .collect()
}

/// Go's `strings.ToUpper`: one character to one character (`unicode.ToUpper`): characters whose
/// full upper case is longer keep their simple mapping (`ß` stays `ß`).
pub fn go_to_upper(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_uppercase();
    }
    s.chars()
        .map(|c| {
            let mut u = c.to_uppercase();
            match (u.next(), u.next()) {
                (Some(one), None) => one,
                _ => simple_upper_of_special(c).unwrap_or(c),
            }
        })
        .collect()
}

/// Simple upper-case mappings of the characters whose full mapping has several characters but
/// whose simple mapping is a different single character (Greek with ypogegrammeni).
fn simple_upper_of_special(c: char) -> Option<char> {
    let u = c as u32;
    let mapped = match u {
        0x1F80..=0x1F87 | 0x1F90..=0x1F97 | 0x1FA0..=0x1FA7 => u + 8,
        0x1FB3 => 0x1FBC,
        0x1FC3 => 0x1FCC,
        0x1FF3 => 0x1FFC,
        _ => return None,
    };
    char::from_u32(mapped)
}
