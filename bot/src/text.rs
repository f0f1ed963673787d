//! Small text helpers every surface uses the same way.

/// Percent-encodes one URL path segment or query value (everything but RFC 3986's unreserved
/// characters).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Cuts at a character boundary to at most `max_chars` characters, with an ellipsis.
pub fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let cut: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// The last `max_chars` characters: the newest part of some output.
pub fn last_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().rev().nth(max_chars.saturating_sub(1)) {
        Some((start, _)) if max_chars > 0 => &text[start..],
        _ if max_chars == 0 => "",
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_and_cutting() {
        assert_eq!(percent_encode("ci[bot] a/b"), "ci%5Bbot%5D%20a%2Fb");
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo wörld", 5), "héll…");
        assert_eq!(last_chars("héllo wörld", 5), "wörld");
        assert_eq!(last_chars("hé", 5), "hé");
        assert_eq!(last_chars("hé", 0), "");
    }
}
