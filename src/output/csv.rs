//! Minimal RFC 4180 CSV field quoting.

/// Quotes `field` when it holds a comma, quote, CR or LF (quotes doubled).
pub fn field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(super::field("a/b.png"), "a/b.png");
        assert_eq!(super::field("a,b"), "\"a,b\"");
        assert_eq!(super::field("say \"x\"\n"), "\"say \"\"x\"\"\n\"");
    }
}
