//! Placement constraints (`node.labels.zone==east`) and preferences (`spread=node.labels.zone`),
//! kept as the strings users wrote and parsed on the way in so a bad one never reaches the store.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConstraintOp {
    Eq,
    Ne,
}

/// One `key==value` or `key!=value` placement constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub key: String,
    pub op: ConstraintOp,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("constraint {0:?}: constraint expected one operator from ==, !=")]
    Operator(String),
    #[error(
        "constraint {0:?}: unsupported key {1:?} (allowed: node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.<label>, engine.labels.<label>)"
    )]
    Key(String, String),
    #[error("constraint {0:?}: the value must not be empty")]
    EmptyValue(String),
    #[error("constraint {0:?}: node.role must be manager or worker, not {1:?}")]
    Role(String, String),
}

const PLAIN_KEYS: [&str; 5] = ["node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch"];

impl Constraint {
    pub fn parse(text: &str) -> Result<Self, ConstraintError> {
        let eq = text.find("==");
        let ne = text.find("!=");
        let (pos, op) = match (eq, ne) {
            (Some(e), None) => (e, ConstraintOp::Eq),
            (None, Some(n)) => (n, ConstraintOp::Ne),
            _ => return Err(ConstraintError::Operator(text.to_string())),
        };
        let key = text[..pos].trim();
        let value = text[pos + 2..].trim();
        if value.contains("==") || value.contains("!=") {
            return Err(ConstraintError::Operator(text.to_string()));
        }
        let label_key = |prefix: &str| {
            key.strip_prefix(prefix).is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
            })
        };
        if !(PLAIN_KEYS.contains(&key.to_ascii_lowercase().as_str())
            || label_key("node.labels.")
            || label_key("engine.labels."))
        {
            return Err(ConstraintError::Key(text.to_string(), key.to_string()));
        }
        if value.is_empty() {
            return Err(ConstraintError::EmptyValue(text.to_string()));
        }
        if key.eq_ignore_ascii_case("node.role") && !matches!(value, "manager" | "worker") {
            return Err(ConstraintError::Role(text.to_string(), value.to_string()));
        }
        Ok(Constraint { key: key.to_string(), op, value: value.to_string() })
    }
}

impl Constraint {
    /// Evaluates the constraint against a node whose attributes `attr` looks up by key
    /// (`node.id`, `node.labels.zone`, …). As in Swarm: values compare case-insensitively, a
    /// missing attribute is "" (so `!=x` matches and `==x` does not).
    pub fn matches<'a>(&self, attr: impl Fn(&str) -> Option<&'a str>) -> bool {
        let actual = attr(&self.key).unwrap_or("");
        let equal = actual.eq_ignore_ascii_case(&self.value);
        match self.op {
            ConstraintOp::Eq => equal,
            ConstraintOp::Ne => !equal,
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            ConstraintOp::Eq => "==",
            ConstraintOp::Ne => "!=",
        };
        write!(f, "{}{}{}", self.key, op, self.value)
    }
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Constraint::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// `spread=<descriptor>`: spread tasks evenly over the values of a node label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementPreference {
    pub spread: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PreferenceError {
    #[error("placement preference {0:?}: placement preference must be of the format \"<strategy>=<arg>\"")]
    Format(String),
    #[error("placement preference {0:?}: unsupported placement preference {1} (only spread is supported)")]
    Strategy(String, String),
    #[error("placement preference {0:?}: spread descriptor must be node.labels.<label> or engine.labels.<label>")]
    Descriptor(String),
}

impl PlacementPreference {
    pub fn parse(text: &str) -> Result<Self, PreferenceError> {
        let (strategy, arg) = text.split_once('=').ok_or_else(|| PreferenceError::Format(text.to_string()))?;
        if !strategy.eq_ignore_ascii_case("spread") {
            return Err(PreferenceError::Strategy(text.to_string(), strategy.to_string()));
        }
        let arg = arg.trim();
        let ok =
            ["node.labels.", "engine.labels."].iter().any(|p| arg.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
        if !ok {
            return Err(PreferenceError::Descriptor(text.to_string()));
        }
        Ok(PlacementPreference { spread: arg.to_string() })
    }
}

impl fmt::Display for PlacementPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spread={}", self.spread)
    }
}

impl Serialize for PlacementPreference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PlacementPreference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PlacementPreference::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_constraints() {
        let c = Constraint::parse("node.labels.zone == east").unwrap();
        assert_eq!((c.key.as_str(), c.op, c.value.as_str()), ("node.labels.zone", ConstraintOp::Eq, "east"));
        assert_eq!(c.to_string(), "node.labels.zone==east");
        assert_eq!(Constraint::parse("node.role!=manager").unwrap().op, ConstraintOp::Ne);
    }

    #[test]
    fn refuses_bad_constraints() {
        assert_eq!(
            Constraint::parse("node.labels.a=b").unwrap_err().to_string(),
            "constraint \"node.labels.a=b\": constraint expected one operator from ==, !="
        );
        assert!(matches!(Constraint::parse("node.labels.a==b==c"), Err(ConstraintError::Operator(_))));
        assert!(matches!(Constraint::parse("a==b!=c"), Err(ConstraintError::Operator(_))));
        assert!(matches!(Constraint::parse("color==red"), Err(ConstraintError::Key(..))));
        assert!(matches!(Constraint::parse("node.labels.==x"), Err(ConstraintError::Key(..))));
        assert!(matches!(Constraint::parse("node.id=="), Err(ConstraintError::EmptyValue(_))));
        assert!(matches!(Constraint::parse("node.role==boss"), Err(ConstraintError::Role(..))));
    }

    #[test]
    fn evaluates_against_attributes() {
        let attrs = |k: &str| match k {
            "node.labels.zone" => Some("East"),
            "node.role" => Some("worker"),
            _ => None,
        };
        assert!(Constraint::parse("node.labels.zone==east").unwrap().matches(attrs));
        assert!(!Constraint::parse("node.labels.zone!=east").unwrap().matches(attrs));
        assert!(!Constraint::parse("node.labels.rack==a").unwrap().matches(attrs), "missing is empty");
        assert!(Constraint::parse("node.labels.rack!=a").unwrap().matches(attrs));
        assert!(Constraint::parse("node.role==worker").unwrap().matches(attrs));
    }

    #[test]
    fn parses_preferences() {
        assert_eq!(PlacementPreference::parse("spread=node.labels.zone").unwrap().spread, "node.labels.zone");
        assert!(matches!(PlacementPreference::parse("spread"), Err(PreferenceError::Format(_))));
        assert!(matches!(PlacementPreference::parse("pack=node.labels.x"), Err(PreferenceError::Strategy(..))));
        assert!(matches!(PlacementPreference::parse("spread=zone"), Err(PreferenceError::Descriptor(_))));
    }
}
