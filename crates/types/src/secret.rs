//! Secrets and configs: named bytes kept by the managers and mounted as files into the containers
//! of the services that use them (docker's `secret` and `config`). Both have the same shape; a
//! secret's value is never shown (not by `inspect`, events or errors) and appears under
//! `/run/secrets/` in the container, a config's at an absolute path (`/<name>` by default).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Swarm's limit on a secret's or config's value.
pub const MAX_DATA_BYTES: usize = 500 * 1024;
/// Where secrets appear in the container.
pub const SECRETS_DIR: &str = "/run/secrets";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    Secret,
    Config,
    /// A name scope for services (`shoal network create`): tasks of services on one network
    /// reach each other by service name. It has no value.
    Network,
}

impl DataKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::Secret => "secret",
            DataKind::Config => "config",
            DataKind::Network => "network",
        }
    }

    pub fn parse(text: &str) -> Option<DataKind> {
        match text {
            "secret" => Some(DataKind::Secret),
            "config" => Some(DataKind::Config),
            "network" => Some(DataKind::Network),
            _ => None,
        }
    }
}

impl fmt::Display for DataKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `secret create` / `config create` are given.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The value, base64 in JSON. Absent from what `inspect` and `ls` show (see
    /// [`DataObject::without_data`]).
    #[serde(default, with = "base64_bytes", skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<u8>,
}

/// Never prints the value, so a `{:?}` in a log line or a panic cannot leak it.
impl fmt::Debug for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataSpec")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .finish()
    }
}

/// A secret or a config as the managers keep it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataObject {
    pub id: String,
    pub kind: DataKind,
    /// Raft index of its creation.
    pub version: u64,
    pub created_at: u64,
    pub updated_at: u64,
    pub spec: DataSpec,
    /// The value's length (also when the value itself is left out).
    #[serde(default)]
    pub size: u64,
}

impl DataSpec {
    /// What is wrong with a new object of `kind` on its own, each as `<kind> <name>: …`: its
    /// name (a network's by a service name's rules, as specs list it), its value's size (1 to
    /// [`MAX_DATA_BYTES`]; a network holds none) and its label keys. Empty: nothing.
    pub fn problems(&self, kind: DataKind) -> Vec<String> {
        let name = &self.name;
        let mut problems = Vec::new();
        let name_check = match kind {
            DataKind::Network => crate::validate_name("name", name).map_err(|e| e.message),
            DataKind::Secret | DataKind::Config => validate_data_name(name),
        };
        if let Err(why) = name_check {
            problems.push(format!("{kind} {name}: {why}"));
        }
        let size = self.data.len();
        match kind {
            DataKind::Network if size > 0 => problems.push(format!("network {name}: a network holds no data")),
            DataKind::Secret | DataKind::Config if size == 0 || size > MAX_DATA_BYTES => problems.push(format!(
                "{kind} {name}: {size} bytes of data; a {kind} holds 1 to {MAX_DATA_BYTES} bytes (500 KiB, Swarm's limit)"
            )),
            _ => {}
        }
        if self.labels.keys().any(String::is_empty) {
            problems.push(format!("{kind} {name}: label keys must not be empty"));
        }
        problems
    }
}

impl DataObject {
    /// The object without its value: what `inspect`, `ls` and events show.
    pub fn without_data(&self) -> DataObject {
        let mut shown = self.clone();
        shown.spec.data = Vec::new();
        shown
    }
}

/// A service's use of a secret or config: the file it appears as in the container
/// (`--secret source=db_password,target=password,uid=999,gid=999,mode=0400`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataReference {
    /// The secret's or config's name.
    pub source: String,
    /// For a secret, a file name under `/run/secrets` (or an absolute path); for a config, an
    /// absolute path (a relative one is taken from `/`). Default: the source's name.
    pub target: String,
    #[serde(default = "root")]
    pub uid: String,
    #[serde(default = "root")]
    pub gid: String,
    /// File mode; 0444 by default, as docker's.
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn root() -> String {
    "0".to_string()
}

fn default_mode() -> u32 {
    0o444
}

impl DataReference {
    /// `NAME` or `source=NAME[,target=PATH][,uid=N][,gid=N][,mode=0444]` (docker's `--secret`
    /// and `--config`; `src` and `dst` are accepted too).
    pub fn parse(text: &str) -> Result<DataReference, String> {
        let text = text.trim();
        if !text.contains('=') {
            if text.is_empty() {
                return Err("empty: expected NAME or source=NAME[,target=PATH,uid=N,gid=N,mode=0444]".into());
            }
            return Ok(DataReference::named(text));
        }
        let (mut source, mut target, mut uid, mut gid, mut mode) = (None, None, root(), root(), default_mode());
        for field in text.split(',') {
            let (key, value) =
                field.split_once('=').ok_or_else(|| format!("invalid field {field:?}: expected KEY=VALUE"))?;
            let value = value.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "source" | "src" => source = Some(value.to_string()),
                "target" | "dst" | "destination" => target = Some(value.to_string()),
                "uid" => uid = value.to_string(),
                "gid" => gid = value.to_string(),
                "mode" => {
                    mode = parse_mode(value).filter(|m| *m <= 0o777).ok_or_else(|| {
                        format!("invalid mode {value:?}: expected an octal file mode from 0 to 0777 (e.g. 0400)")
                    })?;
                }
                other => {
                    return Err(format!("unknown field {other:?} (allowed: source, target, uid, gid, mode)"));
                }
            }
        }
        let source = source.filter(|s| !s.is_empty()).ok_or("source is required (source=NAME)")?;
        let target = target.unwrap_or_else(|| source.clone());
        Ok(DataReference { source, target, uid, gid, mode })
    }

    /// The reference docker's short form makes: the file is named after the source.
    pub fn named(name: &str) -> DataReference {
        DataReference { source: name.to_string(), target: name.to_string(), uid: root(), gid: root(), mode: 0o444 }
    }

    /// Where the file appears in the container.
    pub fn path(&self, kind: DataKind) -> String {
        if self.target.starts_with('/') {
            return self.target.clone();
        }
        match kind {
            DataKind::Secret => format!("{SECRETS_DIR}/{}", self.target),
            DataKind::Config | DataKind::Network => format!("/{}", self.target),
        }
    }

    /// Checks the reference on its own: a valid source name, a target without `..` or empty
    /// parts, numeric owners, a mode up to 0777.
    pub fn check(&self) -> Result<(), String> {
        validate_data_name(&self.source).map_err(|why| format!("source {:?}: {why}", self.source))?;
        if self.target.is_empty() {
            return Err("target: must not be empty".into());
        }
        let parts: Vec<&str> = self.target.trim_start_matches('/').split('/').collect();
        if parts.iter().any(|p| *p == ".." || *p == "." || p.is_empty()) {
            return Err(format!(
                "target {:?}: must be a file path without '.', '..' or empty parts (e.g. password or /etc/app.conf)",
                self.target
            ));
        }
        for (what, id) in [("uid", &self.uid), ("gid", &self.gid)] {
            if id.parse::<u32>().is_err() {
                return Err(format!("{what} {id:?}: expected a number (e.g. 0 or 1000)"));
            }
        }
        if self.mode > 0o777 {
            return Err(format!("mode {:o}: expected an octal file mode from 0 to 0777", self.mode));
        }
        Ok(())
    }
}

/// A mode as docker reads it (Go's `ParseUint(v, 0, 32)`): `0400` and `0o400` octal, `0x100`
/// hexadecimal, `256` decimal (the same mode as 0400).
pub fn parse_mode(text: &str) -> Option<u32> {
    let lower = text.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix("0x") {
        return u32::from_str_radix(hex, 16).ok();
    }
    if let Some(octal) = lower.strip_prefix("0o") {
        return u32::from_str_radix(octal, 8).ok();
    }
    if lower.len() > 1 && lower.starts_with('0') {
        return u32::from_str_radix(&lower[1..], 8).ok();
    }
    lower.parse().ok()
}

/// A secret's or config's name: letters, digits, `-`, `_` and `.`, starting and ending with a
/// letter or digit, at most 64 characters (Swarm's rule).
pub fn validate_data_name(name: &str) -> Result<(), String> {
    let allowed =
        "letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most 64 characters";
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid { Ok(()) } else { Err(format!("invalid name {name:?} (allowed: {allowed})")) }
}

/// A file a task's container gets: a secret's or config's value at a path, with its owner and
/// mode. Built by the agent from the data the leader sent for the task.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskFile {
    pub kind: DataKind,
    pub source: String,
    /// Absolute path in the container.
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub data: Vec<u8>,
}

impl fmt::Debug for TaskFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskFile")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .field("path", &self.path)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .finish()
    }
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_docker_s_short_and_long_forms() {
        assert_eq!(DataReference::parse("db_password").unwrap(), DataReference::named("db_password"));
        let long = DataReference::parse("source=db_password,target=pw,uid=999,gid=998,mode=0400").unwrap();
        assert_eq!(
            long,
            DataReference {
                source: "db_password".into(),
                target: "pw".into(),
                uid: "999".into(),
                gid: "998".into(),
                mode: 0o400
            }
        );
        assert_eq!(long.path(DataKind::Secret), "/run/secrets/pw");
        assert_eq!(long.path(DataKind::Config), "/pw");
        let absolute = DataReference::parse("src=app,dst=/etc/app.conf").unwrap();
        assert_eq!(absolute.path(DataKind::Config), "/etc/app.conf");
        assert_eq!(absolute.mode, 0o444);
        // Modes as docker reads them: a leading 0 is octal, without it decimal.
        for (text, mode) in [("0400", 0o400), ("0o400", 0o400), ("256", 0o400), ("0x100", 0o400), ("0", 0)] {
            assert_eq!(DataReference::parse(&format!("source=x,mode={text}")).unwrap().mode, mode, "{text}");
        }
        assert_eq!(DataReference::parse("Source=x,Target=y").unwrap().target, "y", "keys in any case");
        for (bad, expected) in [
            ("source=x,mode=999", "invalid mode \"999\": expected an octal file mode from 0 to 0777"),
            ("source=x,mode=1777", "invalid mode \"1777\""),
            ("target=x", "source is required"),
            ("source=x,colour=red", "unknown field \"colour\" (allowed: source, target, uid, gid, mode)"),
            ("", "empty: expected NAME"),
        ] {
            let err = DataReference::parse(bad).unwrap_err();
            assert!(err.contains(expected), "{bad}: {err}");
        }
    }

    #[test]
    fn checks_name_the_value_and_what_is_allowed() {
        let check = |text: &str| DataReference::parse(text).unwrap().check();
        assert_eq!(check("source=db,target=pw"), Ok(()));
        assert_eq!(check("source=db,target=/etc/db/pw"), Ok(()));
        assert!(check("source=db,target=../x").unwrap_err().contains("target \"../x\": must be a file path without"));
        assert!(check("source=db,target=/a//b").is_err());
        assert!(check("source=db,uid=root").unwrap_err().contains("uid \"root\": expected a number"));
        assert!(check("source=-db").unwrap_err().contains("invalid name \"-db\""));
        assert_eq!(validate_data_name("db_password.v2"), Ok(()));
        assert!(validate_data_name(&"a".repeat(65)).is_err());
        assert!(validate_data_name("").is_err());
    }

    #[test]
    fn the_value_travels_as_base64_and_is_never_debug_printed() {
        let spec = DataSpec { name: "pw".into(), labels: BTreeMap::new(), data: b"hunter2".to_vec() };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, r#"{"name":"pw","data":"aHVudGVyMg=="}"#);
        assert_eq!(serde_json::from_str::<DataSpec>(&json).unwrap(), spec);
        assert!(!format!("{spec:?}").contains("hunter2"));
        let object = DataObject {
            id: "i".into(),
            kind: DataKind::Secret,
            version: 1,
            created_at: 0,
            updated_at: 0,
            spec,
            size: 7,
        };
        let shown = serde_json::to_string(&object.without_data()).unwrap();
        assert!(!shown.contains("aHVudGVyMg") && shown.contains("\"size\":7"), "{shown}");
    }

    #[test]
    fn a_new_objects_problems_are_its_name_its_size_and_its_label_keys_by_kind() {
        let spec =
            |name: &str, data: &[u8]| DataSpec { name: name.into(), labels: Default::default(), data: data.to_vec() };
        assert!(spec("db.password", b"x").problems(DataKind::Secret).is_empty());
        assert!(spec("backend", b"").problems(DataKind::Network).is_empty());
        assert_eq!(
            spec("db.net", b"x").problems(DataKind::Network),
            [
                "network db.net: \"db.net\" is not a valid name (letters, digits, '-' and '_', starting and ending with a letter or digit, at most 63 characters)",
                "network db.net: a network holds no data",
            ]
        );
        let mut empty_key = spec("conf", b"");
        empty_key.labels.insert(String::new(), "v".into());
        assert_eq!(
            empty_key.problems(DataKind::Config),
            [
                "config conf: 0 bytes of data; a config holds 1 to 512000 bytes (500 KiB, Swarm's limit)",
                "config conf: label keys must not be empty",
            ]
        );
        let too_big = spec("big", &vec![0; MAX_DATA_BYTES + 1]);
        assert_eq!(too_big.problems(DataKind::Secret).len(), 1);
    }
}
