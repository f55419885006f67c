//! Mounts of a task's container: bind mounts of a host path, named (or anonymous) volumes, and
//! tmpfs, with docker's `--mount` syntax (`type=volume,source=data,target=/data,readonly`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    /// A named volume (created on the node on first use) or, with no source, an anonymous one.
    #[default]
    Volume,
    Tmpfs,
}

impl MountType {
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Volume => "volume",
            MountType::Tmpfs => "tmpfs",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    Private,
    Rprivate,
    Shared,
    Rshared,
    Slave,
    Rslave,
}

impl Propagation {
    pub const ALL: [Propagation; 6] = [
        Propagation::Private,
        Propagation::Rprivate,
        Propagation::Shared,
        Propagation::Rshared,
        Propagation::Slave,
        Propagation::Rslave,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Private => "private",
            Propagation::Rprivate => "rprivate",
            Propagation::Shared => "shared",
            Propagation::Rshared => "rshared",
            Propagation::Slave => "slave",
            Propagation::Rslave => "rslave",
        }
    }
}

/// Options of a volume mount: how Docker creates the volume on first use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeOptions {
    /// Do not copy the image's files at the target into a new, empty volume.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_copy: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The volume driver (Docker's `local` when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_options: BTreeMap<String, String>,
}

impl VolumeOptions {
    fn is_empty(&self) -> bool {
        *self == VolumeOptions::default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmpfsOptions {
    /// Size limit in bytes; 0: unlimited (Docker's default).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size_bytes: u64,
    /// File mode of the tmpfs root (e.g. 0o1777); None: Docker's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    #[serde(rename = "type", default)]
    pub kind: MountType,
    /// Host path (bind), volume name (volume; empty: anonymous), nothing (tmpfs).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
    /// Bind propagation (bind mounts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Propagation>,
    #[serde(default, skip_serializing_if = "VolumeOptions::is_empty")]
    pub volume: VolumeOptions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsOptions>,
}

impl fmt::Display for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "type={}", self.kind.as_str())?;
        if !self.source.is_empty() {
            write!(f, ",source={}", self.source)?;
        }
        write!(f, ",target={}", self.target)?;
        if self.readonly {
            write!(f, ",readonly")?;
        }
        Ok(())
    }
}

/// A docker boolean option value (`readonly`, `readonly=true`, `ro=0`).
fn boolean(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("1" | "true" | "t") => Ok(true),
        Some("0" | "false" | "f") => Ok(false),
        Some(other) => Err(format!("invalid value for {key}: {other} (allowed: true, false)")),
    }
}

/// The value of `field`'s `key=value`, refused when the field is a bare key.
fn needs_value<'a>(field: &str, value: Option<&'a str>) -> Result<&'a str, String> {
    value.ok_or_else(|| format!("invalid field '{field}' must be a key=value pair"))
}

/// `KEY=VALUE` of `volume-label` / `volume-opt`.
fn pair(key: &str, value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("invalid value for {key}: {value} (expected KEY=VALUE)")),
    }
}

/// A byte size with docker's units (`64m`, `1g`, `512k`, `1024`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (digits, unit) = match lower.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => lower.split_at(at),
        None => (lower, ""),
    };
    let multiplier: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("invalid size {text}: expected a number of bytes with an optional unit k, m, g or t")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text}: expected a number of bytes with an optional unit k, m, g or t"))?;
    n.checked_mul(multiplier).ok_or_else(|| format!("invalid size {text}: too large"))
}

impl Mount {
    /// Docker's `--mount` value: comma-separated `key=value` fields (a bare `readonly` or
    /// `volume-nocopy` means true). The type defaults to volume.
    pub fn parse(text: &str) -> Result<Mount, String> {
        let mut mount = Mount::default();
        // The last option given of each type's family (`bind-*`, `volume-*`, `tmpfs-*`): options of
        // another type than the mount's are refused, naming one.
        let mut options_of: BTreeMap<MountType, String> = BTreeMap::new();
        let mut tmpfs = TmpfsOptions::default();
        for field in text.split(',') {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v)),
                None => (field.trim().to_ascii_lowercase(), None),
            };
            for (prefix, kind) in
                [("bind-", MountType::Bind), ("volume-", MountType::Volume), ("tmpfs-", MountType::Tmpfs)]
            {
                if key.starts_with(prefix) {
                    options_of.insert(kind, key.clone());
                }
            }
            match key.as_str() {
                "type" => {
                    mount.kind = match needs_value(field, value)? {
                        "bind" => MountType::Bind,
                        "volume" => MountType::Volume,
                        "tmpfs" => MountType::Tmpfs,
                        other => return Err(format!("invalid mount type {other:?} (allowed: bind, volume, tmpfs)")),
                    }
                }
                "source" | "src" => mount.source = needs_value(field, value)?.to_string(),
                "target" | "destination" | "dst" => mount.target = needs_value(field, value)?.to_string(),
                "readonly" | "ro" => mount.readonly = boolean(&key, value)?,
                "bind-propagation" => {
                    let value = needs_value(field, value)?;
                    mount.propagation =
                        Some(Propagation::ALL.into_iter().find(|p| p.as_str() == value).ok_or_else(|| {
                            format!(
                                "invalid bind-propagation {value:?} (allowed: private, rprivate, shared, rshared, slave, rslave)"
                            )
                        })?);
                }
                "volume-nocopy" => {
                    mount.volume.no_copy = boolean(&key, value)?;
                }
                "volume-label" => {
                    let (k, v) = pair(&key, needs_value(field, value)?)?;
                    mount.volume.labels.insert(k, v);
                }
                "volume-driver" => {
                    mount.volume.driver = Some(needs_value(field, value)?.to_string());
                }
                "volume-opt" => {
                    let (k, v) = pair(&key, needs_value(field, value)?)?;
                    mount.volume.driver_options.insert(k, v);
                }
                "tmpfs-size" => {
                    tmpfs.size_bytes = parse_bytes(needs_value(field, value)?)?;
                }
                "tmpfs-mode" => {
                    let value = needs_value(field, value)?;
                    let mode = u32::from_str_radix(value.trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| format!("invalid tmpfs-mode {value:?} (expected an octal mode, e.g. 1777)"))?;
                    tmpfs.mode = Some(mode);
                }
                _ => {
                    return Err(format!(
                        "unexpected key '{key}' in '{field}' (allowed: type, source, target, readonly, bind-propagation, volume-nocopy, volume-label, volume-driver, volume-opt, tmpfs-size, tmpfs-mode)"
                    ));
                }
            }
        }
        if let Some(option) = options_of.iter().find_map(|(kind, option)| (*kind != mount.kind).then_some(option)) {
            return Err(format!("cannot mix '{option}' with mount type '{}'", mount.kind.as_str()));
        }
        if mount.kind == MountType::Tmpfs {
            mount.tmpfs = Some(tmpfs);
        }
        if mount.target.is_empty() {
            return Err("target is required".to_string());
        }
        Ok(mount)
    }

    /// Docker's rules for a mount, as a reason (the caller names the field): an absolute target
    /// with no `..`; a bind's source an absolute host path; a volume's name a valid one; a tmpfs
    /// without source; options only of the mount's type.
    pub fn check(&self) -> Result<(), String> {
        let target = &self.target;
        if !target.starts_with('/') {
            return Err(format!("invalid mount target {target:?}: it must be an absolute path"));
        }
        if target.split('/').any(|part| part == "..") {
            return Err(format!("invalid mount target {target:?}: it must not contain '..'"));
        }
        if target == "/" {
            return Err("invalid mount target \"/\": the container's root cannot be a mount".to_string());
        }
        match self.kind {
            MountType::Bind => {
                if self.source.is_empty() {
                    return Err("a bind mount needs a source (an absolute path on the node)".to_string());
                }
                if !self.source.starts_with('/') {
                    return Err(format!("invalid bind source {:?}: it must be an absolute path", self.source));
                }
            }
            MountType::Volume => {
                let name = &self.source;
                let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                    && name.chars().next().is_none_or(|c| c.is_ascii_alphanumeric());
                if !valid || name.len() > 255 {
                    return Err(format!(
                        "invalid volume name {name:?}: up to 255 of [a-zA-Z0-9_.-], starting with a letter or digit"
                    ));
                }
            }
            MountType::Tmpfs => {
                if !self.source.is_empty() {
                    return Err(format!("a tmpfs mount has no source (got {:?})", self.source));
                }
            }
        }
        if self.kind != MountType::Bind && self.propagation.is_some() {
            return Err(format!("bind-propagation cannot be used with mount type '{}'", self.kind.as_str()));
        }
        if self.kind != MountType::Volume && !self.volume.is_empty() {
            return Err(format!("volume options cannot be used with mount type '{}'", self.kind.as_str()));
        }
        if self.kind != MountType::Tmpfs && self.tmpfs.is_some() {
            return Err(format!("tmpfs options cannot be used with mount type '{}'", self.kind.as_str()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_mount_syntax_is_parsed() {
        let m = Mount::parse("type=bind,source=/srv/data,target=/data,readonly,bind-propagation=rslave").unwrap();
        assert_eq!(
            m,
            Mount {
                kind: MountType::Bind,
                source: "/srv/data".into(),
                target: "/data".into(),
                readonly: true,
                propagation: Some(Propagation::Rslave),
                ..Mount::default()
            }
        );
        let m = Mount::parse("src=db,dst=/var/lib/db,volume-label=tier=db,volume-opt=o=bind,volume-nocopy").unwrap();
        assert_eq!(m.kind, MountType::Volume, "volume is the default type");
        assert_eq!((m.source.as_str(), m.target.as_str(), m.readonly), ("db", "/var/lib/db", false));
        assert!(m.volume.no_copy);
        assert_eq!(m.volume.labels["tier"], "db");
        assert_eq!(m.volume.driver_options["o"], "bind");
        let m = Mount::parse("type=tmpfs,target=/scratch,tmpfs-size=64m,tmpfs-mode=1770").unwrap();
        assert_eq!(m.tmpfs, Some(TmpfsOptions { size_bytes: 64 << 20, mode: Some(0o1770) }));
        assert!(!Mount::parse("target=/x,ro=false").unwrap().readonly);
        for m in [&m, &Mount::parse("type=bind,src=/a,dst=/b").unwrap()] {
            m.check().unwrap();
        }
    }

    #[test]
    fn bad_mounts_are_refused_with_the_value_and_what_is_allowed() {
        for (text, expected) in [
            ("type=nfs,target=/x", "invalid mount type \"nfs\" (allowed: bind, volume, tmpfs)"),
            ("source=x", "target is required"),
            ("target", "invalid field 'target' must be a key=value pair"),
            ("target=/x,colour=red", "unexpected key 'colour' in 'colour=red'"),
            ("type=bind,src=/a,target=/x,volume-nocopy", "cannot mix 'volume-nocopy' with mount type 'bind'"),
            ("type=tmpfs,target=/x,tmpfs-mode=999", "invalid tmpfs-mode \"999\" (expected an octal mode, e.g. 1777)"),
            ("type=tmpfs,target=/x,tmpfs-size=lots", "invalid size lots"),
            ("target=/x,readonly=maybe", "invalid value for readonly: maybe (allowed: true, false)"),
        ] {
            let err = Mount::parse(text).unwrap_err();
            assert!(err.starts_with(expected), "{text}: {err}");
        }
        for (text, expected) in [
            ("type=bind,src=/a,target=data", "invalid mount target \"data\": it must be an absolute path"),
            ("type=bind,src=/a,target=/x/../etc", "invalid mount target \"/x/../etc\": it must not contain '..'"),
            ("type=bind,target=/x", "a bind mount needs a source"),
            ("type=bind,src=rel,target=/x", "invalid bind source \"rel\": it must be an absolute path"),
            ("src=../up,target=/x", "invalid volume name \"../up\""),
            ("type=tmpfs,src=x,target=/x", "a tmpfs mount has no source (got \"x\")"),
            ("type=bind,src=/a,target=/", "invalid mount target \"/\""),
        ] {
            let err = Mount::parse(text).unwrap().check().unwrap_err();
            assert!(err.starts_with(expected), "{text}: {err}");
        }
    }
}
