//! The normalised stack model: what is left after merging the files, interpolating variables,
//! resolving short syntaxes (ports, `command` strings, list-form `environment`/`labels`,
//! `env_file`, legacy `restart:`) and applying compose's defaults. It serialises (in a fixed key
//! order) to the YAML that `docker stack config` would print.

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_types::{
    Constraint, EndpointMode, GoDuration, HealthConfig, Labels, PortConfig, RestartPolicy, UpdateConfig,
};

/// A whole stack: every service by its short (unprefixed) name.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StackFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub services: BTreeMap<String, Service>,
    /// `x-change-cause`: why this deploy is made, kept with the revision of each service it
    /// changes (`stack deploy --change-cause` wins over it).
    #[serde(rename = "x-change-cause", skip_serializing_if = "Option::is_none")]
    pub change_cause: Option<String>,
    /// The top-level `volumes:`, by the name services use.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, VolumeDef>,
    /// The top-level `secrets:`, by the name services use.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, DataDef>,
    /// The top-level `configs:`, by the name services use.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, DataDef>,
    /// The top-level `networks:`, by the name services use (`file` is never set).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, DataDef>,
    /// The top-level `x-routes:` (shoal's extension; docker ignores it), by short name.
    #[serde(rename = "x-routes", skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, RouteDef>,
    /// `x-atomic: true`: deploy as `stack deploy --atomic` does.
    #[serde(rename = "x-atomic", skip_serializing_if = "std::ops::Not::not")]
    pub atomic: bool,
}

/// An `x-routes:` entry: a published port over the stack's services a selector matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RouteDef {
    /// `PUBLISHED:TARGET`.
    pub publish: String,
    /// Service labels (`deploy.labels`) the selected services carry.
    pub select: Labels,
    /// Shares in per cent by the services' short names.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, u32>,
}

/// A top-level `secrets:` or `configs:` entry: the file its value is read from at deploy, or
/// that it exists already (`external: true`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DataDef {
    /// The object's name in the cluster; `<stack>_<key>` when not given (the key for external
    /// ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the value is read from (at deploy), relative to the first stack file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

impl DataDef {
    /// The name of the object in the cluster for key `key` of stack `stack`.
    pub fn object_name(&self, stack: &str, key: &str) -> String {
        match (&self.name, self.external) {
            (Some(name), _) => name.clone(),
            (None, true) => key.to_string(),
            (None, false) => format!("{stack}_{key}"),
        }
    }
}

/// A top-level `volumes:` entry: how the stack's named volume is created, or that it exists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VolumeDef {
    /// The volume's name on the nodes; `<stack>_<key>` when not given (not for external ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

/// One compose service, normalised.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Service {
    pub image: String,
    /// The services (short names) an atomic deploy rolls out before this one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Overrides the image's entrypoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Overrides the image's CMD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `env_file` entries overlaid by `environment`, sorted by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Container labels (the service-level `labels:` key).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Ports in long syntax, ranges expanded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `volumes:` in long syntax; a volume's source is the name in the top-level `volumes:`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<shoal_types::Mount>,
    /// `secrets:`, sources by their key in the top-level `secrets:`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<shoal_types::DataReference>,
    /// `configs:`, sources by their key in the top-level `configs:`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<shoal_types::DataReference>,
    /// `networks:`, by their key in the top-level `networks:` (none: the stack's `default`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    pub deploy: Deploy,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployMode {
    #[default]
    Replicated,
    Global,
    #[serde(rename = "replicated-job")]
    ReplicatedJob,
    #[serde(rename = "global-job")]
    GlobalJob,
}

/// The `deploy:` block.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Deploy {
    pub mode: DeployMode,
    /// Always set for replicated services (1 when omitted); never for global ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    /// Service labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Present when the file has the block (with compose's defaults filled in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    /// From `deploy.restart_policy`, or else from the legacy service-level `restart:` key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(skip_serializing_if = "DeployPlacement::is_empty")]
    pub placement: DeployPlacement,
    #[serde(skip_serializing_if = "DeployResources::is_empty")]
    pub resources: DeployResources,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_mode: Option<EndpointMode>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeployPlacement {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<SpreadPreference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<u64>,
}

impl DeployPlacement {
    pub fn is_empty(&self) -> bool {
        *self == DeployPlacement::default()
    }
}

/// `{spread: node.labels.zone}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SpreadPreference {
    pub spread: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeployResources {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceAmounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservations: Option<ResourceAmounts>,
}

impl DeployResources {
    pub fn is_empty(&self) -> bool {
        *self == DeployResources::default()
    }
}

/// `cpus` as a decimal string (`"0.5"`), `memory` in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ResourceAmounts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}
