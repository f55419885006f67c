//! A located YAML tree. serde-saphyr has no `Value` type, so the file is read into [`Node`] (a
//! dynamic tree whose every node is `Spanned`) and turned into [`Val`], which remembers the file
//! and position of every key and value. Anchors, aliases and `<<` merge keys are expanded by the
//! parser; positions point at where a value is *defined* (the anchored scalar for an alias).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::error::{ComposeError, Location};

/// Index of a file in the list of stack files plus a 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub file: usize,
    pub line: u64,
    pub column: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    /// An integer and its spelling in the file.
    Int(i128, String),
    /// A float and its spelling in the file (`1.10` stays `1.10` when used as a string).
    Float(f64, String),
    Str(String),
    Seq(Vec<Val>),
    Map(Vec<(Key, Val)>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Val {
    pub kind: Kind,
    pub loc: Loc,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Key {
    pub name: String,
    pub loc: Loc,
}

impl Val {
    pub fn new(kind: Kind, loc: Loc) -> Self {
        Val { kind, loc }
    }

    /// How serde would describe the value in an "invalid type" message.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "null".to_string(),
            Kind::Bool(b) => format!("boolean {b}"),
            Kind::Int(_, raw) => format!("integer {raw}"),
            Kind::Float(_, raw) => format!("floating point {raw}"),
            Kind::Str(s) => format!("string {s:?}"),
            Kind::Seq(_) => "sequence".to_string(),
            Kind::Map(_) => "mapping".to_string(),
        }
    }

    /// The text of a scalar (numbers as written, booleans as `true`/`false`), `None` otherwise.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Bool(b) => Some(b.to_string()),
            Kind::Int(_, raw) | Kind::Float(_, raw) => Some(raw.clone()),
            Kind::Str(s) => Some(s.clone()),
            Kind::Null | Kind::Seq(_) | Kind::Map(_) => None,
        }
    }

    pub fn as_map_mut(&mut self) -> Option<&mut Vec<(Key, Val)>> {
        match &mut self.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Val> {
        self.as_map_mut()?.iter_mut().find(|(k, _)| k.name == name).map(|(_, v)| v)
    }
}

/// The raw tree serde-saphyr produces.
enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(i128::try_from(v).map(Node::Int).unwrap_or_else(|_| Node::Str(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = access.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = access.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

fn options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    // YAML 1.2 booleans only: `restart: no` and `FOO: yes` stay strings, as in docker compose.
    options.strict_booleans = true;
    // `0755` and `1_000` stay strings rather than silently becoming other numbers.
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options.with_snippet = false;
    options
}

/// Parses one YAML document into a located tree. `file` is the index used in [`Loc`];
/// `name` is used in error messages.
pub(crate) fn parse(file: usize, name: &str, text: &str) -> Result<Val, ComposeError> {
    let root = serde_saphyr::from_str_with_options::<Spanned<Node>>(text, options())
        .map_err(|err| syntax_error(name, &err))?;
    let builder = Builder { file, name, text };
    builder.val(root)
}

fn syntax_error(name: &str, err: &serde_saphyr::Error) -> ComposeError {
    let err = err.without_snippet();
    let mut message = err.to_string();
    let (line, column) = err.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
    // Our messages carry the position in front; drop the one serde-saphyr appends.
    let suffix = format!(" at line {line}, column {column}");
    if let Some(stripped) = message.strip_suffix(&suffix) {
        message = stripped.to_string();
    }
    if let Some(stripped) = message.strip_suffix(", set DuplicateKeyPolicy in Options if acceptable") {
        message = stripped.to_string();
    }
    let line = line.max(1);
    let column = column.max(1);
    ComposeError::Syntax { location: Location { file: name.to_string(), line, column }, message }
}

struct Builder<'a> {
    file: usize,
    name: &'a str,
    text: &'a str,
}

impl Builder<'_> {
    fn loc(&self, location: &serde_saphyr::Location) -> Loc {
        Loc { file: self.file, line: location.line().max(1), column: location.column().max(1) }
    }

    /// The text a scalar was written as, when the parser reports its byte range.
    fn raw(&self, location: &serde_saphyr::Location) -> Option<String> {
        let span = location.span();
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        let raw = self.text.get(start..start.checked_add(len)?)?.trim();
        (!raw.is_empty()).then(|| raw.to_string())
    }

    fn val(&self, node: Spanned<Node>) -> Result<Val, ComposeError> {
        let loc = self.loc(&node.defined);
        let kind = match node.value {
            Node::Null => Kind::Null,
            Node::Bool(b) => Kind::Bool(b),
            Node::Int(i) => {
                // Only trust the spelling if it is a plain number (an alias or tag would differ).
                let raw = self
                    .raw(&node.defined)
                    .filter(|r| r.parse::<i128>().ok() == Some(i))
                    .unwrap_or_else(|| i.to_string());
                Kind::Int(i, raw)
            }
            Node::Float(f) => {
                let raw = self
                    .raw(&node.defined)
                    .filter(|r| r.parse::<f64>().ok() == Some(f))
                    .unwrap_or_else(|| f.to_string());
                Kind::Float(f, raw)
            }
            Node::Str(s) => Kind::Str(s),
            Node::Seq(items) => Kind::Seq(items.into_iter().map(|i| self.val(i)).collect::<Result<_, _>>()?),
            Node::Map(entries) => {
                let mut out: Vec<(Key, Val)> = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    let key_loc = self.loc(&key.defined);
                    let name = match key.value {
                        Node::Str(s) => s,
                        Node::Int(i) => i.to_string(),
                        Node::Float(f) => f.to_string(),
                        Node::Bool(b) => b.to_string(),
                        Node::Null | Node::Seq(_) | Node::Map(_) => {
                            return Err(ComposeError::Syntax {
                                location: Location {
                                    file: self.name.to_string(),
                                    line: key_loc.line,
                                    column: key_loc.column,
                                },
                                message: "mapping keys must be strings".to_string(),
                            });
                        }
                    };
                    let value = self.val(value)?;
                    out.push((Key { name, loc: key_loc }, value));
                }
                Kind::Map(out)
            }
        };
        Ok(Val::new(kind, loc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_get<'a>(v: &'a Val, key: &str) -> &'a Val {
        match &v.kind {
            Kind::Map(entries) => &entries.iter().find(|(k, _)| k.name == key).unwrap().1,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn keeps_positions_spellings_and_merges() {
        let text = "x: &d\n  a: 1.10\nsvc:\n  <<: *d\n  b: no\n  c: 0755\n";
        let root = parse(0, "s.yml", text).unwrap();
        let svc = map_get(&root, "svc");
        let a = map_get(svc, "a");
        assert_eq!(a.kind, Kind::Float(1.1, "1.10".into()));
        assert_eq!((a.loc.line, a.loc.column), (2, 6), "defined location of the merged value");
        assert_eq!(map_get(svc, "b").kind, Kind::Str("no".into()));
        assert_eq!(map_get(svc, "c").kind, Kind::Str("0755".into()));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse(0, "s.yml", "a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.to_string(), "s.yml:2:1: duplicate mapping key: a");
        let err = parse(0, "s.yml", "a: [1\nb: 2\n").unwrap_err();
        assert!(err.to_string().starts_with("s.yml:"), "{err}");
    }
}
