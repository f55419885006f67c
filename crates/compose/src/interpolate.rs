//! Compose variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?error}`, `${VAR?error}`, `${VAR:+replacement}`, `${VAR+replacement}` and `$$` for a
//! literal `$`. Defaults and replacements may themselves contain interpolations
//! (`${A:-${B:-x}}`); they are only expanded when used.
//!
//! The `:` forms treat a variable set to the empty string like an unset one, exactly as in a
//! POSIX shell and in docker compose.

/// The outcome of interpolating one string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interpolated {
    pub value: String,
    /// Variables that were referenced without a default while unset (each substituted by "").
    pub unset: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    /// `${VAR?message}` / `${VAR:?message}` with `VAR` unset (or empty for `:?`).
    #[error("required variable {name} is missing a value{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Required { name: String, message: String },
    /// A `$` not followed by `$`, a name or a well-formed `{...}`.
    #[error("invalid interpolation format in {text:?}; you may need to escape any $ with another $ (write $$)")]
    Invalid { text: String },
}

/// Interpolates `text`, looking variables up with `lookup`.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Interpolated, InterpolationError> {
    let mut unset = Vec::new();
    let value = Expander { whole: text, lookup }.expand(text, &mut unset)?;
    Ok(Interpolated { value, unset })
}

fn is_name_start(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphabetic()
}

fn is_name_char(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphanumeric()
}

struct Expander<'a> {
    /// The whole input, for error messages.
    whole: &'a str,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Expander<'_> {
    fn invalid(&self) -> InterpolationError {
        InterpolationError::Invalid { text: self.whole.to_string() }
    }

    fn expand(&self, text: &str, unset: &mut Vec<String>) -> Result<String, InterpolationError> {
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut literal_start = 0;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                i += 1;
                continue;
            }
            out.push_str(&text[literal_start..i]);
            match bytes.get(i + 1) {
                Some(b'$') => {
                    out.push('$');
                    i += 2;
                }
                Some(b'{') => {
                    let close = find_close(bytes, i + 2).ok_or_else(|| self.invalid())?;
                    out.push_str(&self.braced(&text[i + 2..close], unset)?);
                    i = close + 1;
                }
                Some(&b) if is_name_start(b) => {
                    let start = i + 1;
                    let mut end = start;
                    while end < bytes.len() && is_name_char(bytes[end]) {
                        end += 1;
                    }
                    let name = &text[start..end];
                    out.push_str(&self.value_or_unset(name, unset));
                    i = end;
                }
                _ => return Err(self.invalid()),
            }
            literal_start = i;
        }
        out.push_str(&text[literal_start..]);
        Ok(out)
    }

    fn value_or_unset(&self, name: &str, unset: &mut Vec<String>) -> String {
        match (self.lookup)(name) {
            Some(value) => value,
            None => {
                if !unset.iter().any(|u| u == name) {
                    unset.push(name.to_string());
                }
                String::new()
            }
        }
    }

    /// Expands the inside of `${...}`.
    fn braced(&self, inner: &str, unset: &mut Vec<String>) -> Result<String, InterpolationError> {
        let bytes = inner.as_bytes();
        if bytes.first().is_none_or(|&b| !is_name_start(b)) {
            return Err(self.invalid());
        }
        let name_end = bytes.iter().position(|&b| !is_name_char(b)).unwrap_or(bytes.len());
        let name = &inner[..name_end];
        let rest = &inner[name_end..];
        let value = (self.lookup)(name);
        let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
        let required = |message: &str, unset: &mut Vec<String>| -> Result<String, InterpolationError> {
            Err(InterpolationError::Required { name: name.to_string(), message: self.expand(message, unset)? })
        };
        if rest.is_empty() {
            return Ok(self.value_or_unset(name, unset));
        }
        if let Some(default) = rest.strip_prefix(":-") {
            return if set_nonempty { Ok(value.unwrap_or_default()) } else { self.expand(default, unset) };
        }
        if let Some(message) = rest.strip_prefix(":?") {
            return if set_nonempty { Ok(value.unwrap_or_default()) } else { required(message, unset) };
        }
        if let Some(replacement) = rest.strip_prefix(":+") {
            return if set_nonempty { self.expand(replacement, unset) } else { Ok(String::new()) };
        }
        if let Some(default) = rest.strip_prefix('-') {
            return match value {
                Some(v) => Ok(v),
                None => self.expand(default, unset),
            };
        }
        if let Some(message) = rest.strip_prefix('?') {
            return match value {
                Some(v) => Ok(v),
                None => required(message, unset),
            };
        }
        if let Some(replacement) = rest.strip_prefix('+') {
            return if value.is_some() { self.expand(replacement, unset) } else { Ok(String::new()) };
        }
        Err(self.invalid())
    }
}

/// Finds the `}` closing a `${` whose inside starts at `start`, skipping nested `${...}` and `$$`.
fn find_close(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 1usize;
    let mut j = start;
    while j < bytes.len() {
        match bytes[j] {
            b'$' if matches!(bytes.get(j + 1), Some(b'{')) => {
                depth += 1;
                j += 2;
                continue;
            }
            b'$' if matches!(bytes.get(j + 1), Some(b'$')) => {
                j += 2;
                continue;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
        j += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn run(text: &str) -> Result<Interpolated, InterpolationError> {
        let env: BTreeMap<&str, &str> = [("TAG", "1.2"), ("EMPTY", ""), ("NAME", "web"), ("PORT", "8080")].into();
        interpolate(text, &|name| env.get(name).map(|v| v.to_string()))
    }

    fn value(text: &str) -> String {
        run(text).unwrap().value
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(value("busybox:${TAG}"), "busybox:1.2");
        assert_eq!(value("busybox:$TAG"), "busybox:1.2");
        assert_eq!(value("$NAME-$PORT"), "web-8080");
        assert_eq!(value("${NAME}_x"), "web_x");
        assert_eq!(value("$NAME_x"), "", "the name runs on over `_x`");
        assert_eq!(value("no variables"), "no variables");
        assert_eq!(value("héllo ${NAME} wörld"), "héllo web wörld");
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        assert_eq!(value("echo $$HOME"), "echo $HOME");
        assert_eq!(value("$$$$"), "$$");
        assert_eq!(value("$${TAG}"), "${TAG}");
        assert_eq!(value("${MISSING:-$$x}"), "$x");
    }

    #[test]
    fn defaults() {
        assert_eq!(value("${MISSING:-3}"), "3");
        assert_eq!(value("${MISSING-3}"), "3");
        assert_eq!(value("${EMPTY:-3}"), "3", ":- also replaces an empty value");
        assert_eq!(value("${EMPTY-3}"), "", "- keeps an empty value");
        assert_eq!(value("${TAG:-3}"), "1.2");
        assert_eq!(value("${MISSING:-}"), "");
        assert_eq!(value("${MISSING:-a b:c}"), "a b:c");
        assert_eq!(value("${MISSING:-${NAME}}"), "web", "nested default");
        assert_eq!(value("${MISSING:-${ALSO:-deep}}"), "deep");
        assert_eq!(value("${TAG:-${REQ?never evaluated}}"), "1.2", "unused defaults are not expanded");
    }

    #[test]
    fn replacements() {
        assert_eq!(value("${TAG:+set}"), "set");
        assert_eq!(value("${EMPTY:+set}"), "");
        assert_eq!(value("${EMPTY+set}"), "set");
        assert_eq!(value("${MISSING+set}"), "");
    }

    #[test]
    fn unset_variables_are_reported_once() {
        let out = run("$A-${A}-${B}").unwrap();
        assert_eq!(out.value, "--");
        assert_eq!(out.unset, vec!["A".to_string(), "B".to_string()]);
        assert!(run("${MISSING:-x}").unwrap().unset.is_empty(), "a default counts as set");
    }

    #[test]
    fn required_variables() {
        assert_eq!(
            run("${MISSING?tag is required}").unwrap_err().to_string(),
            "required variable MISSING is missing a value: tag is required"
        );
        assert_eq!(
            run("${EMPTY:?must not be empty}").unwrap_err(),
            InterpolationError::Required { name: "EMPTY".into(), message: "must not be empty".into() }
        );
        assert_eq!(value("${EMPTY?only unset fails}"), "");
        assert_eq!(run("${MISSING?}").unwrap_err().to_string(), "required variable MISSING is missing a value");
        assert_eq!(value("${TAG:?x}"), "1.2");
        assert_eq!(
            run("${MISSING:?set ${NAME}}").unwrap_err().to_string(),
            "required variable MISSING is missing a value: set web",
        );
    }

    #[test]
    fn invalid_templates() {
        for bad in ["$", "cost: 5$", "echo $1", "${", "${TAG", "${}", "${1A}", "${TAG*x}", "${ TAG}", "a $ b"] {
            let err = run(bad).unwrap_err();
            assert_eq!(err, InterpolationError::Invalid { text: bad.to_string() }, "{bad:?}");
        }
        assert_eq!(
            run("echo $1").unwrap_err().to_string(),
            "invalid interpolation format in \"echo $1\"; you may need to escape any $ with another $ (write $$)"
        );
    }
}
