//! `.env` and `env_file` parsing.
//!
//! One `KEY=VALUE` a line; blank lines and lines starting with `#` are skipped; an `export `
//! prefix is allowed. Values may be `"double quoted"` (with `\n`, `\t`, `\"`, `\\` escapes),
//! `'single quoted'` (literal) or bare (trimmed; ` #` starts a comment). A line with a bare
//! `KEY` and no `=` has no value of its own: in an `env_file` it takes the variable from the
//! environment; in `.env` it is ignored. No interpolation happens inside these files.

/// A parse failure: 1-based line and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvFileError {
    pub line: usize,
    pub message: String,
}

/// Parses the text of an env file into `(key, value)` pairs in file order.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, Option<String>)>, EnvFileError> {
    let mut out = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line_no = index + 1;
        let err = |message: String| EnvFileError { line: line_no, message };
        let line = raw_line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value)),
            None => (line, None),
        };
        let valid_key = key.bytes().next().is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
            && key.bytes().all(|b| b == b'_' || b == b'.' || b == b'-' || b.is_ascii_alphanumeric());
        if !valid_key {
            return Err(err(format!("invalid variable name {key:?} (expected KEY=VALUE)")));
        }
        let value = match value {
            None => None,
            Some(value) => Some(parse_value(value.trim_start()).map_err(err)?),
        };
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn parse_value(value: &str) -> Result<String, String> {
    if let Some(rest) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return trailing(chars.as_str()).map(|()| out),
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(other @ ('"' | '\\' | '$')) => out.push(other),
                    Some(other) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => out.push('\\'),
                },
                c => out.push(c),
            }
        }
        return Err("unterminated double quote".to_string());
    }
    if let Some(rest) = value.strip_prefix('\'') {
        return match rest.split_once('\'') {
            Some((inside, after)) => trailing(after).map(|()| inside.to_string()),
            None => Err("unterminated single quote".to_string()),
        };
    }
    let value = match value.find(" #").or_else(|| value.find("\t#")) {
        Some(comment) => &value[..comment],
        None => value,
    };
    Ok(value.trim().to_string())
}

/// After a closing quote only white space or a comment may follow.
fn trailing(after: &str) -> Result<(), String> {
    let after = after.trim();
    if after.is_empty() || after.starts_with('#') {
        Ok(())
    } else {
        Err(format!("unexpected text {after:?} after the closing quote"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, Option<String>)> {
        parse_env_file(text).unwrap()
    }

    fn kv(k: &str, v: &str) -> (String, Option<String>) {
        (k.to_string(), Some(v.to_string()))
    }

    #[test]
    fn parses_the_usual_forms() {
        let text = "# comment\n\nTAG=1.2\nexport NAME = web \nEMPTY=\nURL=http://x/#frag\nC=value # note\nBARE\n";
        assert_eq!(
            pairs(text),
            vec![
                kv("TAG", "1.2"),
                kv("NAME", "web"),
                kv("EMPTY", ""),
                kv("URL", "http://x/#frag"),
                kv("C", "value"),
                ("BARE".to_string(), None),
            ]
        );
    }

    #[test]
    fn quotes() {
        assert_eq!(pairs("A=\"a b # c\"\n"), vec![kv("A", "a b # c")]);
        assert_eq!(pairs("A=\"line\\nnext \\\"q\\\"\"\n"), vec![kv("A", "line\nnext \"q\"")]);
        assert_eq!(pairs("A='lit $X \\n' # c\n"), vec![kv("A", "lit $X \\n")]);
        assert_eq!(pairs("A=x=y\n"), vec![kv("A", "x=y")]);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse_env_file("A=1\n1X=2\n").unwrap_err().line, 2);
        assert_eq!(
            parse_env_file("A=\"open\n").unwrap_err(),
            EnvFileError { line: 1, message: "unterminated double quote".into() }
        );
        assert!(parse_env_file("A='x' y\n").unwrap_err().message.contains("after the closing quote"));
        assert!(parse_env_file("=x\n").is_err());
    }
}
