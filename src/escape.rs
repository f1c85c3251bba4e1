//! Percent-encoding details that the planner (URL forms a cache may have keyed), the providers
//! (URLs in requests), the verifier and the scrubber (a secret in every form it may be logged
//! in) share; a module of its own so that none depends on another for it (`config` → `secret` →
//! `plan` → `config`, and `config` → `providers` → `plan` → `config`, were cycles).

use percent_encoding::{AsciiSet, CONTROLS};

/// Characters that a URL path carries percent-encoded.
pub(crate) const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%');

/// `encoded` with the hex digits of its `%XX` escapes in lower case.
pub(crate) fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            out.push(c);
            if c == '%' {
                hex_left = 2;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_escapes_hex_digits_are_lowered() {
        assert_eq!(super::lower_hex("A%2Fb%C3%A9C"), "A%2fb%c3%a9C");
        assert_eq!(super::lower_hex("%"), "%");
        assert_eq!(super::lower_hex("%A"), "%a");
    }
}
