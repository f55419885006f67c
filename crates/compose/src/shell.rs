//! Shell-style word splitting for `command: "..."` and `entrypoint: "..."` (as docker compose does
//! with go-shellwords): words split on white space, `'...'` is literal, `"..."` allows `\"`, `\\`,
//! `\$` and `` \` `` escapes, and a backslash outside quotes escapes the next character. Nothing
//! is expanded: no variables, globs or operators.

pub fn split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                match chars.next() {
                    Some('\n') => {}
                    Some(next) => word.push(next),
                    None => return Err("a trailing backslash escapes nothing".to_string()),
                }
                in_word = true;
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => word.push(e),
                            Some('\n') => {}
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err("unterminated double quote".to_string()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".to_string()),
                    }
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        split(text).unwrap()
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(words("sleep 3600"), ["sleep", "3600"]);
        assert_eq!(words("  a\t b\nc  "), ["a", "b", "c"]);
        assert_eq!(words(r#"sh -c "echo 'hi there' && exit 1""#), ["sh", "-c", "echo 'hi there' && exit 1"]);
        assert_eq!(words(r#"echo 'a "b"' c\ d"#), ["echo", "a \"b\"", "c d"]);
        assert_eq!(words(r#"x "a\"b\\c\n""#), ["x", "a\"b\\c\\n"]);
        assert_eq!(words(r#"'' """#), ["", ""]);
        assert_eq!(words("echo $HOME"), ["echo", "$HOME"]);
        assert!(words("").is_empty());
    }

    #[test]
    fn refuses_unbalanced_quotes() {
        assert_eq!(split("echo 'oops").unwrap_err(), "unterminated single quote");
        assert_eq!(split("echo \"oops").unwrap_err(), "unterminated double quote");
        assert!(split("echo \\").is_err());
    }
}
