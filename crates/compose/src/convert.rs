//! Normalised compose service → shoal `ServiceSpec`, the way `docker stack deploy` converts
//! (`cli/compose/convert/service.go`): name `<stack>_<service>`, the stack namespace label on the
//! service and its containers, `entrypoint` → command, `command` → args.

use std::collections::BTreeMap;

use shoal_types::units::parse_nano_cpus;
use shoal_types::{
    ContainerSpec, EndpointSpec, GoDuration, JOB_ROLLBACK_CONFIG, JOB_UPDATE_CONFIG, Labels, Placement,
    PlacementPreference, ResourceAmounts, Resources, ServiceMode, ServiceSpec, TaskSpec, ValidationError,
};

use crate::error::{ComposeError, Location};
use crate::model::{DeployMode, Service, VolumeDef};
use crate::parse::join;

/// The label docker puts on every object of a stack.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// A service's mounts with the stack's named volumes resolved as `docker stack deploy` does: a
/// volume must be declared at the top level; it is named `<stack>_<name>` (or its `name:`),
/// created on first use with the declared driver, options and labels plus the stack's label, and
/// an `external` one is used as it is.
fn mounts(
    stack: &str,
    short: &str,
    service: &Service,
    volumes: &BTreeMap<String, VolumeDef>,
    locations: &BTreeMap<String, Location>,
) -> Result<Vec<shoal_types::Mount>, ComposeError> {
    let mut mounts = Vec::with_capacity(service.volumes.len());
    for (i, mount) in service.volumes.iter().enumerate() {
        let mut mount = mount.clone();
        if mount.kind == shoal_types::MountType::Volume && !mount.source.is_empty() {
            let Some(def) = volumes.get(&mount.source) else {
                let path = format!("services.{short}.volumes[{i}]");
                return Err(ComposeError::invalid(
                    find_location(locations, &path),
                    path,
                    format!("undefined volume {:?}: declare it under the top-level volumes:", mount.source),
                ));
            };
            let name = match (&def.name, def.external) {
                (Some(name), _) => name.clone(),
                (None, true) => mount.source.clone(),
                (None, false) => format!("{stack}_{}", mount.source),
            };
            if !def.external {
                mount.volume.driver.clone_from(&def.driver);
                mount.volume.driver_options.clone_from(&def.driver_opts);
                mount.volume.labels.extend(def.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                mount.volume.labels.insert(NAMESPACE_LABEL.to_string(), stack.to_string());
            }
            mount.source = name;
        }
        mounts.push(mount);
    }
    Ok(mounts)
}

/// A service's `secrets:` or `configs:` with each source resolved to the object's name in the
/// cluster (`<stack>_<key>`, or the `name:` / external one); a key not declared at the top
/// level is refused.
fn data_references(
    stack: &str,
    short: &str,
    list: &str,
    references: &[shoal_types::DataReference],
    defs: &BTreeMap<String, crate::model::DataDef>,
    locations: &BTreeMap<String, Location>,
) -> Result<Vec<shoal_types::DataReference>, ComposeError> {
    let kind = if list == "secrets" { "secret" } else { "config" };
    references
        .iter()
        .enumerate()
        .map(|(i, reference)| {
            let Some(def) = defs.get(&reference.source) else {
                let path = format!("services.{short}.{list}[{i}]");
                return Err(ComposeError::invalid(
                    find_location(locations, &path),
                    path,
                    format!("undefined {kind} {:?}: declare it under the top-level {list}:", reference.source),
                ));
            };
            let mut resolved = reference.clone();
            resolved.source = def.object_name(stack, &reference.source);
            Ok(resolved)
        })
        .collect()
}

/// The name of the network every service of a stack without `networks:` is on, as docker's.
pub const DEFAULT_NETWORK: &str = "default";

/// A service's networks resolved to their names in the cluster, as `docker stack deploy` does:
/// none listed means the stack's `default` network (`<stack>_default`); any other must be
/// declared at the top level, and is `<stack>_<key>` (or its `name:` / the external one).
fn networks(
    stack: &str,
    short: &str,
    service: &Service,
    defs: &BTreeMap<String, crate::model::DataDef>,
    locations: &BTreeMap<String, Location>,
) -> Result<Vec<String>, ComposeError> {
    // A name services can list: the rules of a service's name.
    let checked = |name: String, path: String| {
        shoal_types::validate_name("network", &name).map(|_| name.clone()).map_err(|e| {
            ComposeError::invalid(
                find_location(locations, &path),
                path,
                format!("network name {name:?}: {}", e.message),
            )
        })
    };
    if service.networks.is_empty() {
        let name = defs
            .get(DEFAULT_NETWORK)
            .map_or_else(|| format!("{stack}_{DEFAULT_NETWORK}"), |def| def.object_name(stack, DEFAULT_NETWORK));
        return Ok(vec![checked(name, format!("services.{short}"))?]);
    }
    let mut out: Vec<String> = Vec::new();
    for (i, key) in service.networks.iter().enumerate() {
        let name = match defs.get(key) {
            Some(def) => def.object_name(stack, key),
            None if key == DEFAULT_NETWORK => format!("{stack}_{DEFAULT_NETWORK}"),
            None => {
                let path = format!("services.{short}.networks[{i}]");
                return Err(ComposeError::invalid(
                    find_location(locations, &path),
                    path,
                    format!("undefined network {key:?}: declare it under the top-level networks:"),
                ));
            }
        };
        let name = checked(name, format!("services.{short}.networks[{i}]"))?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

pub(crate) fn to_service_spec(
    stack: &str,
    short: &str,
    service: &Service,
    top: &crate::model::StackFile,
    locations: &BTreeMap<String, Location>,
) -> Result<ServiceSpec, ComposeError> {
    let (volumes, secrets, configs) = (&top.volumes, &top.secrets, &top.configs);
    let with_namespace = |labels: &Labels| {
        let mut labels = labels.clone();
        labels.insert(NAMESPACE_LABEL.to_string(), stack.to_string());
        labels
    };
    let deploy = &service.deploy;
    // docker sends a present block as a config, which Swarm refuses for a job whatever it holds.
    if matches!(deploy.mode, DeployMode::ReplicatedJob | DeployMode::GlobalJob) {
        let refusals = [
            (deploy.update_config.is_some(), "update_config", JOB_UPDATE_CONFIG),
            (deploy.rollback_config.is_some(), "rollback_config", JOB_ROLLBACK_CONFIG),
        ];
        if let Some((_, field, message)) = refusals.into_iter().find(|(present, _, _)| *present) {
            return Err(validation_error(short, &ValidationError::new(field, message), locations));
        }
    }
    let container = ContainerSpec {
        image: service.image.clone(),
        command: service.entrypoint.clone().unwrap_or_default(),
        args: service.command.clone().unwrap_or_default(),
        env: service.environment.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        labels: with_namespace(&service.labels),
        hostname: service.hostname.clone(),
        user: service.user.clone(),
        workdir: service.working_dir.clone(),
        stop_grace_period: service.stop_grace_period.unwrap_or(GoDuration::from_secs(10)),
        stop_drain_timeout: None,
        stop_signal: service.stop_signal.clone(),
        healthcheck: service.healthcheck.clone(),
        mounts: mounts(stack, short, service, volumes, locations)?,
        secrets: data_references(stack, short, "secrets", &service.secrets, secrets, locations)?,
        configs: data_references(stack, short, "configs", &service.configs, configs, locations)?,
    };
    let resources = Resources {
        limits: amounts(short, "limits", deploy.resources.limits.as_ref(), locations)?,
        reservations: amounts(short, "reservations", deploy.resources.reservations.as_ref(), locations)?,
    };
    let placement = Placement {
        constraints: deploy.placement.constraints.clone(),
        preferences: deploy
            .placement
            .preferences
            .iter()
            .map(|p| PlacementPreference { spread: p.spread.clone() })
            .collect(),
        max_replicas_per_node: deploy.placement.max_replicas_per_node.unwrap_or(0),
    };
    let spec = ServiceSpec {
        name: format!("{stack}_{short}"),
        labels: with_namespace(&deploy.labels),
        mode: match deploy.mode {
            DeployMode::Replicated => ServiceMode::Replicated { replicas: deploy.replicas.unwrap_or(1) },
            DeployMode::Global => ServiceMode::Global,
            // Docker's compose conversion: the replicas are both the completions and the
            // concurrency.
            DeployMode::ReplicatedJob => {
                let n = deploy.replicas.unwrap_or(1);
                ServiceMode::ReplicatedJob { total_completions: n, max_concurrent: n.max(1) }
            }
            DeployMode::GlobalJob => ServiceMode::GlobalJob,
        },
        task: TaskSpec {
            container,
            resources,
            restart_policy: deploy.restart_policy.clone().unwrap_or_else(|| default_restart(deploy.mode)),
            placement,
            force_update: 0,
            networks: networks(stack, short, service, &top.networks, locations)?,
        },
        update_config: deploy.update_config.clone().unwrap_or_default(),
        rollback_config: deploy.rollback_config.clone().unwrap_or_default(),
        endpoint: EndpointSpec { mode: deploy.endpoint_mode.unwrap_or_default(), ports: service.ports.clone() },
    };
    spec.validate().map_err(|e| validation_error(short, &e, locations))?;
    Ok(spec)
}

fn amounts(
    short: &str,
    which: &str,
    amounts: Option<&crate::model::ResourceAmounts>,
    locations: &BTreeMap<String, Location>,
) -> Result<ResourceAmounts, ComposeError> {
    let Some(amounts) = amounts else { return Ok(ResourceAmounts::default()) };
    let nano_cpus = match &amounts.cpus {
        Some(cpus) => parse_nano_cpus(cpus).map_err(|e| {
            let path = format!("services.{short}.deploy.resources.{which}.cpus");
            ComposeError::invalid(find_location(locations, &path), path, e.to_string())
        })?,
        None => 0,
    };
    Ok(ResourceAmounts { nano_cpus, memory_bytes: amounts.memory.unwrap_or(0), pids: amounts.pids.unwrap_or(0) })
}

/// Maps a `ServiceSpec::validate` field (`task.resources.limits.memory_bytes`) back to the
/// compose key it came from (`services.web.deploy.resources.limits.memory`).
pub(crate) fn compose_path(short: &str, field: &str) -> String {
    const PREFIXES: &[(&str, &str)] = &[
        ("task.container.healthcheck", "healthcheck"),
        ("task.container.image", "image"),
        ("task.container.env", "environment"),
        ("task.container.labels", "labels"),
        ("task.container.workdir", "working_dir"),
        ("task.container.command", "entrypoint"),
        ("task.container.args", "command"),
        ("task.container.mounts", "volumes"),
        ("task.container", ""),
        ("task.resources", "deploy.resources"),
        ("task.placement", "deploy.placement"),
        ("task.restart_policy", "deploy.restart_policy"),
        ("update_config", "deploy.update_config"),
        ("rollback_config", "deploy.rollback_config"),
        ("endpoint.mode", "deploy.endpoint_mode"),
        ("endpoint", "ports"),
        ("labels", "deploy.labels"),
        ("mode", "deploy.mode"),
        ("name", ""),
    ];
    let service = join("services", short);
    if field.starts_with("endpoint.ports") {
        return join(&service, "ports");
    }
    let mapped = PREFIXES.iter().find_map(|(prefix, replacement)| {
        let rest = field.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with('.')).then(|| format!("{replacement}{rest}"))
    });
    let Some(mapped) = mapped else { return service };
    let mapped = mapped.trim_start_matches('.').replace(".nano_cpus", ".cpus").replace(".memory_bytes", ".memory");
    // shoal's strategy settings are extension keys in the file.
    let mapped = [
        (".steps", ".x-steps"),
        (".max_surge", ".x-max-surge"),
        (".max_unavailable", ".x-max-unavailable"),
        (".old_tasks", ".x-old-tasks"),
        (".prepare_ahead", ".x-prepare-ahead"),
    ]
    .iter()
    .fold(mapped, |path, (field, key)| path.replace(field, key));
    if mapped.is_empty() { service } else { join(&service, &mapped) }
}

/// The location recorded for `path`, or for its closest ancestor.
pub(crate) fn find_location(locations: &BTreeMap<String, Location>, path: &str) -> Option<Location> {
    let mut path = path;
    loop {
        if let Some(location) = locations.get(path) {
            return Some(location.clone());
        }
        path = &path[..path.rfind(['.', '['])?];
    }
}

fn validation_error(short: &str, err: &ValidationError, locations: &BTreeMap<String, Location>) -> ComposeError {
    let path = compose_path(short, &err.field);
    ComposeError::invalid(find_location(locations, &path), path, err.message.clone())
}

/// Swarm's default restart policy, but a job's tasks are restarted only when they fail (docker).
fn default_restart(mode: DeployMode) -> shoal_types::RestartPolicy {
    let mut policy = shoal_types::RestartPolicy::default();
    if matches!(mode, DeployMode::ReplicatedJob | DeployMode::GlobalJob) {
        policy.condition = shoal_types::RestartCondition::OnFailure;
    }
    policy
}

/// The routes of stack `stack`'s `x-routes:`: named `<stack>_<name>`, labelled with the stack's
/// namespace, selecting only the stack's own services (the namespace label is added to the
/// selector), with weights by the services' full names.
pub fn route_specs(
    stack: &str,
    file: &crate::model::StackFile,
) -> Result<Vec<shoal_types::traffic::RouteSpec>, ComposeError> {
    let mut out = Vec::new();
    for (name, def) in &file.routes {
        let path = format!("x-routes.{name}");
        let ports = def.publish.split_once(':').and_then(|(p, t)| {
            let port = p.parse::<u16>().ok().filter(|p| *p != 0)?;
            let target = t.parse::<u16>().ok().filter(|t| *t != 0)?;
            Some((port, target))
        });
        let Some((port, target)) = ports else {
            return Err(ComposeError::invalid(
                None,
                format!("{path}.publish"),
                format!("{:?} is not PUBLISHED:TARGET (e.g. 8080:80)", def.publish),
            ));
        };
        let mut selector = def.select.clone();
        selector.insert(NAMESPACE_LABEL.to_string(), stack.to_string());
        let weights = def
            .weights
            .iter()
            .map(|(service, share)| {
                let full =
                    if file.services.contains_key(service) { format!("{stack}_{service}") } else { service.clone() };
                (full, *share)
            })
            .collect();
        let spec = shoal_types::traffic::RouteSpec {
            name: format!("{stack}_{name}"),
            labels: Labels::from([(NAMESPACE_LABEL.to_string(), stack.to_string())]),
            port,
            target,
            selector,
            weights,
        };
        spec.validate().map_err(|e| ComposeError::invalid(None, path.clone(), e.to_string()))?;
        out.push(spec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_spec_fields_to_compose_keys() {
        let cases = [
            ("name", "services.web"),
            ("labels", "services.web.deploy.labels"),
            ("task.container.image", "services.web.image"),
            ("task.container.env", "services.web.environment"),
            ("task.container.labels", "services.web.labels"),
            ("task.container.stop_signal", "services.web.stop_signal"),
            ("task.container.healthcheck.test", "services.web.healthcheck.test"),
            ("task.resources.limits.nano_cpus", "services.web.deploy.resources.limits.cpus"),
            ("task.resources.reservations.memory_bytes", "services.web.deploy.resources.reservations.memory"),
            ("task.resources.reservations.pids", "services.web.deploy.resources.reservations.pids"),
            ("task.placement.max_replicas_per_node", "services.web.deploy.placement.max_replicas_per_node"),
            ("update_config.max_failure_ratio", "services.web.deploy.update_config.max_failure_ratio"),
            ("rollback_config.failure_action", "services.web.deploy.rollback_config.failure_action"),
            ("endpoint.ports.published", "services.web.ports"),
            ("something.else", "services.web"),
        ];
        for (field, path) in cases {
            assert_eq!(compose_path("web", field), path, "{field}");
        }
    }

    #[test]
    fn finds_the_nearest_recorded_location() {
        let here = Location { file: "s.yml".into(), line: 3, column: 5 };
        let locations = BTreeMap::from([("services.web.ports".to_string(), here.clone())]);
        assert_eq!(find_location(&locations, "services.web.ports.published"), Some(here.clone()));
        assert_eq!(find_location(&locations, "services.web.ports[1]"), Some(here));
        assert_eq!(find_location(&locations, "services.db"), None);
    }
}
