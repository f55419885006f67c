//! Join tokens: `SHLTKN-1-<64 hex digits: sha256 of the CA certificate>-<26 characters: secret>`.

use std::fmt;
use std::str::FromStr;

use subtle::ConstantTimeEq;

use crate::CaDigest;

const PREFIX: &str = "SHLTKN";
const VERSION: &str = "1";
const SECRET_LEN: usize = 26;
const SECRET_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_digest: CaDigest,
    secret: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken({}, secret hidden)", self.ca_digest)
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid join token: {0} (expected {PREFIX}-{VERSION}-<64 hex digits>-<{SECRET_LEN} letters and digits>, as printed by `shoal cluster join-token`)"
)]
pub struct TokenError(String);

impl JoinToken {
    /// A new token for the CA with `ca_digest` and a fresh random secret (~134 bits).
    pub fn generate(ca_digest: CaDigest) -> JoinToken {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        let secret: String =
            (0..SECRET_LEN).map(|_| SECRET_ALPHABET[rng.gen_range(0..SECRET_ALPHABET.len())] as char).collect();
        JoinToken { ca_digest, secret }
    }

    /// Compares the whole token with `other` in constant time (the secret must not leak through
    /// how long a refusal takes).
    pub fn matches(&self, other: &str) -> bool {
        bool::from(self.to_string().as_bytes().ct_eq(other.as_bytes()))
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}-{VERSION}-{}-{}", crate::hex(&self.ca_digest.0), self.secret)
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<JoinToken, TokenError> {
        let s = s.trim();
        let parts: Vec<&str> = s.split('-').collect();
        if parts.len() != 4 || parts[0] != PREFIX {
            return Err(TokenError("not a shoal join token".into()));
        }
        if parts[1] != VERSION {
            return Err(TokenError(format!("version {} is not supported", parts[1])));
        }
        let hex = parts[2];
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError("the CA digest is not 64 hex digits".into()));
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| TokenError(e.to_string()))?;
        }
        let secret = parts[3];
        if secret.len() != SECRET_LEN || !secret.bytes().all(|b| SECRET_ALPHABET.contains(&b)) {
            return Err(TokenError(format!("the secret is not {SECRET_LEN} letters and digits")));
        }
        Ok(JoinToken { ca_digest: CaDigest(digest), secret: secret.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_token_prints_and_parses_back_and_matches_only_itself() {
        let token = JoinToken::generate(CaDigest([7; 32]));
        let text = token.to_string();
        assert!(text.starts_with("SHLTKN-1-0707"), "{text}");
        let parsed: JoinToken = text.parse().unwrap();
        assert_eq!(parsed, token);
        assert!(token.matches(&text));
        let other = JoinToken::generate(CaDigest([7; 32]));
        assert!(!token.matches(&other.to_string()));
        assert!(!token.matches(""));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let cases = [
            ("", "not a shoal join token"),
            ("SWMTKN-1-abc-def", "not a shoal join token"),
            ("SHLTKN-2-00-abc", "version 2"),
            ("SHLTKN-1-xyz-abcdefghijklmnopqrstuvwxyz", "64 hex digits"),
            (&format!("SHLTKN-1-{}-short", "0".repeat(64)), "26 letters"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<JoinToken>().unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("shoal cluster join-token"), "{input}: {err}");
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,120}") {
            let _ = s.parse::<JoinToken>();
        }

        #[test]
        fn generated_tokens_round_trip(digest in proptest::array::uniform32(any::<u8>())) {
            let token = JoinToken::generate(CaDigest(digest));
            prop_assert_eq!(token.to_string().parse::<JoinToken>().unwrap(), token);
        }
    }
}
