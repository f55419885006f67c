//! Docker's image reference grammar (distribution/reference), checked before a spec is written, so
//! `shoal/busybox:` (an unset `${TAG}`), `Busybox` or `busy box` is refused with the rule it
//! breaks instead of failing on every node at container create.
//!
//! ```text
//! reference   := name [ ":" tag ] [ "@" digest ]
//! name        := [domain "/"] path-component ["/" path-component]*    (at most 255 characters)
//! domain      := domain-component ["." domain-component]* [":" port]
//! path-component := [a-z0-9]+ (separator [a-z0-9]+)*,  separator := [_.] | "__" | "-"+
//! tag         := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest      := algorithm ":" hex{32,}
//! ```

use std::fmt;

const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Which rule of the grammar a reference breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRefError {
    Empty,
    WhiteSpace,
    EmptyTag,
    InvalidTag(String),
    InvalidDigest(String),
    Uppercase,
    InvalidName(String),
    NameTooLong(usize),
}

impl fmt::Display for ImageRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRefError::Empty => write!(f, "must not be empty"),
            ImageRefError::WhiteSpace => write!(f, "must not contain white space"),
            ImageRefError::EmptyTag => write!(
                f,
                "has an empty tag after ':' (an unset variable?); a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
            ),
            ImageRefError::InvalidTag(tag) => {
                write!(f, "tag {tag:?} is invalid: a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'")
            }
            ImageRefError::InvalidDigest(digest) => {
                write!(f, "digest {digest:?} is invalid: a digest is ALGORITHM:HEX with at least 32 hex digits")
            }
            ImageRefError::Uppercase => write!(f, "repository names must be lowercase"),
            ImageRefError::InvalidName(part) => write!(
                f,
                "repository path component {part:?} is invalid: lowercase letters and digits, separated by '.', '_', '__' or '-'"
            ),
            ImageRefError::NameTooLong(len) => write!(f, "repository name is {len} characters, at most {MAX_NAME_LEN}"),
        }
    }
}

impl std::error::Error for ImageRefError {}

/// Checks `reference` against Docker's grammar.
pub fn check(reference: &str) -> Result<(), ImageRefError> {
    if reference.is_empty() {
        return Err(ImageRefError::Empty);
    }
    if reference.chars().any(char::is_whitespace) {
        return Err(ImageRefError::WhiteSpace);
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest
        && !valid_digest(digest)
    {
        return Err(ImageRefError::InvalidDigest(digest.to_string()));
    }
    // A ':' after the last '/' starts the tag; one before it is a registry port.
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if !rest[colon..].contains('/') => (&rest[..colon], Some(&rest[colon + 1..])),
        _ => (rest, None),
    };
    match tag {
        Some("") => return Err(ImageRefError::EmptyTag),
        Some(tag) if !valid_tag(tag) => return Err(ImageRefError::InvalidTag(tag.to_string())),
        _ => {}
    }
    check_name(name)
}

fn check_name(name: &str) -> Result<(), ImageRefError> {
    if name.is_empty() {
        return Err(ImageRefError::InvalidName(String::new()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ImageRefError::NameTooLong(name.len()));
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // Docker's rule for telling a registry from a path: the first of several components is a
    // domain if it has a '.' or ':' or is `localhost`, or has upper case.
    if components.len() > 1 {
        let first = components[0];
        if first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()) {
            if !valid_domain(first) {
                return Err(ImageRefError::InvalidName(first.to_string()));
            }
            components.remove(0);
        }
    }
    for component in components {
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ImageRefError::Uppercase);
        }
        if !valid_path_component(component) {
            return Err(ImageRefError::InvalidName(component.to_string()));
        }
    }
    Ok(())
}

fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: one '.', one '_', exactly "__", or any run of '-'.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < bytes.len() && bytes[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= bytes.len() || !alnum(bytes[i]) {
            return false;
        }
    }
    true
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if host.starts_with('[') && host.ends_with(']') {
        let inner = &host[1..host.len() - 1];
        return !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    !host.is_empty()
        && host.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty() && b.len() <= MAX_TAG_LEN && word(b[0]) && b.iter().all(|c| word(*c) || *c == b'.' || *c == b'-')
}

fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else { return false };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '-', '_']).all(|part| {
            let b = part.as_bytes();
            !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
        });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_accepts_these() {
        for good in [
            "busybox",
            "shoal/busybox:1",
            "library/busy_box:latest",
            "a__b",
            "a--b-c.d_e",
            "localhost/foo",
            "localhost:5000/busybox:Latest",
            "registry.example.com:443/team/app:v1.2.3-rc_1",
            "[::1]:5000/app",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "app:1@sha256:0123456789abcdef0123456789abcdef",
            "Example.com/app",
            "_x:y",
        ] {
            let result = check(good);
            if good == "_x:y" {
                assert!(result.is_err(), "{good:?}: a path component starts with a letter or digit");
            } else {
                assert_eq!(result, Ok(()), "{good:?}");
            }
        }
    }

    #[test]
    fn docker_refuses_these_naming_the_rule() {
        let cases: &[(&str, ImageRefError)] = &[
            ("", ImageRefError::Empty),
            ("shoal/busybox:", ImageRefError::EmptyTag),
            ("busy box", ImageRefError::WhiteSpace),
            ("Busybox", ImageRefError::Uppercase),
            ("shoal/Busybox:1", ImageRefError::Uppercase),
            ("shoal/busybox:-1", ImageRefError::InvalidTag("-1".into())),
            ("shoal/busybox:a/b", ImageRefError::InvalidName("busybox:a".into())),
            ("a___b", ImageRefError::InvalidName("a___b".into())),
            ("a..b", ImageRefError::InvalidName("a..b".into())),
            ("-a", ImageRefError::InvalidName("-a".into())),
            ("a/", ImageRefError::InvalidName(String::new())),
            (":1", ImageRefError::InvalidName(String::new())),
            ("app@sha256:abc", ImageRefError::InvalidDigest("sha256:abc".into())),
            ("host:port/app", ImageRefError::InvalidName("host:port".into())),
        ];
        for (bad, want) in cases {
            assert_eq!(check(bad).as_ref(), Err(want), "{bad:?}");
        }
        let long = format!("{}:1", "a".repeat(256));
        assert_eq!(check(&long), Err(ImageRefError::NameTooLong(256)));
        assert!(check(&format!("a:{}", "t".repeat(129))).is_err());
        assert_eq!(check(&format!("a:{}", "t".repeat(128))), Ok(()));
    }

    #[test]
    fn messages_name_the_rule() {
        assert!(ImageRefError::EmptyTag.to_string().contains("empty tag"));
        assert_eq!(ImageRefError::Uppercase.to_string(), "repository names must be lowercase");
    }
}
