//! Pure translation of a [`TaskPlan`] into Docker's container name, labels and create body.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, Mount as DockerMount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountTmpfsOptions, MountType as DockerMountType, MountVolumeOptions,
    MountVolumeOptionsDriverConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use shoal_types::{Mount, MountType, Propagation, PublishMode};

use crate::{LABEL_NODE_ID, LABEL_SERVICE_ID, LABEL_SERVICE_NAME, LABEL_TASK_ID, LABEL_TASK_SLOT, TaskPlan};

/// `<service>.<slot>.<task>` for replicated tasks, `<service>.<node>.<task>` for global ones
/// (slot 0), as Swarm names them.
pub fn container_name(plan: &TaskPlan) -> String {
    if plan.slot == 0 {
        format!("{}.{}.{}", plan.service_name, plan.node_id, plan.task_id)
    } else {
        format!("{}.{}.{}", plan.service_name, plan.slot, plan.task_id)
    }
}

/// The spec's container labels plus shoal's own (which win over same-named spec labels).
pub fn container_labels(plan: &TaskPlan, node_id: &str) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> =
        plan.container.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.insert(LABEL_SERVICE_ID.into(), plan.service_id.clone());
    labels.insert(LABEL_SERVICE_NAME.into(), plan.service_name.clone());
    labels.insert(LABEL_TASK_ID.into(), plan.task_id.clone());
    labels.insert(LABEL_TASK_SLOT.into(), plan.slot.to_string());
    labels.insert(LABEL_NODE_ID.into(), node_id.into());
    labels
}

/// Whole seconds for Docker's stop timeout, rounded up (a 1.5s grace period waits 2s).
pub fn grace_secs(grace: Duration) -> i64 {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX).min(i64::from(i32::MAX))
}

fn nanos(d: Duration) -> Option<i64> {
    if d.is_zero() { None } else { Some(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)) }
}

fn positive(v: u64) -> Option<i64> {
    if v == 0 { None } else { Some(i64::try_from(v).unwrap_or(i64::MAX)) }
}

fn some_vec(v: &[String]) -> Option<Vec<String>> {
    if v.is_empty() { None } else { Some(v.to_vec()) }
}

/// A spec mount as Docker's: a named volume that does not exist yet is created by the engine with
/// the mount's driver, options and labels (Swarm's behaviour); a bind source must exist.
pub fn docker_mount(mount: &Mount) -> DockerMount {
    let propagation = mount.propagation.map(|p| match p {
        Propagation::Private => MountBindOptionsPropagationEnum::PRIVATE,
        Propagation::Rprivate => MountBindOptionsPropagationEnum::RPRIVATE,
        Propagation::Shared => MountBindOptionsPropagationEnum::SHARED,
        Propagation::Rshared => MountBindOptionsPropagationEnum::RSHARED,
        Propagation::Slave => MountBindOptionsPropagationEnum::SLAVE,
        Propagation::Rslave => MountBindOptionsPropagationEnum::RSLAVE,
    });
    let volume = &mount.volume;
    let volume_options = (mount.kind == MountType::Volume).then(|| MountVolumeOptions {
        no_copy: volume.no_copy.then_some(true),
        labels: (!volume.labels.is_empty())
            .then(|| volume.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        driver_config: volume.driver.as_ref().map(|name| MountVolumeOptionsDriverConfig {
            name: Some(name.clone()),
            options: (!volume.driver_options.is_empty())
                .then(|| volume.driver_options.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        }),
        subpath: None, // API 1.45+
    });
    DockerMount {
        target: Some(mount.target.clone()),
        source: (!mount.source.is_empty()).then(|| mount.source.clone()),
        typ: Some(match mount.kind {
            MountType::Bind => DockerMountType::BIND,
            MountType::Volume => DockerMountType::VOLUME,
            MountType::Tmpfs => DockerMountType::TMPFS,
        }),
        read_only: mount.readonly.then_some(true),
        bind_options: propagation.map(|p| MountBindOptions { propagation: Some(p), ..Default::default() }),
        volume_options,
        tmpfs_options: mount.tmpfs.as_ref().map(|t| MountTmpfsOptions {
            size_bytes: positive(t.size_bytes),
            mode: t.mode.map(i64::from),
            options: None,
        }),
        ..Default::default()
    }
}

/// The body of `POST /containers/create` for `plan` on node `node_id`:
/// - `command` overrides the image's entrypoint and `args` its CMD (each only when non-empty);
/// - env, hostname, user, workdir, stop signal; the stop timeout is the grace period;
/// - the health check replaces the image's (`["NONE"]` disables it; zero durations and an empty
///   test inherit the image's values);
/// - limits become NanoCpus / Memory / PidsLimit, the memory reservation MemoryReservation (Docker
///   has no CPU reservation);
/// - host-mode ports are exposed and bound (published 0 lets Docker pick a host port);
/// - restart policy "no": shoal restarts tasks itself.
pub fn container_body(plan: &TaskPlan, node_id: &str) -> ContainerCreateBody {
    let spec = &plan.container;
    let healthcheck = spec.healthcheck.as_ref().map(|hc| HealthConfig {
        test: some_vec(&hc.test),
        interval: nanos(hc.interval.as_std()),
        timeout: nanos(hc.timeout.as_std()),
        retries: if hc.retries == 0 { None } else { Some(i64::from(hc.retries)) },
        start_period: nanos(hc.start_period.as_std()),
        start_interval: None, // API 1.44+; our engines speak 1.41
    });

    let mut exposed_ports = Vec::new();
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in plan.ports.iter().filter(|p| p.mode == PublishMode::Host) {
        let key = format!("{}/{}", port.target, port.protocol.as_str());
        let host_port = if port.published == 0 { String::new() } else { port.published.to_string() };
        if !exposed_ports.contains(&key) {
            exposed_ports.push(key.clone());
        }
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding { host_ip: None, host_port: Some(host_port) });
    }

    let limits = &plan.resources.limits;
    let host_config = HostConfig {
        nano_cpus: positive(limits.nano_cpus),
        memory: positive(limits.memory_bytes),
        pids_limit: positive(limits.pids),
        memory_reservation: positive(plan.resources.reservations.memory_bytes),
        port_bindings: if port_bindings.is_empty() { None } else { Some(port_bindings) },
        restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
        mounts: (!spec.mounts.is_empty()).then(|| spec.mounts.iter().map(docker_mount).collect()),
        extra_hosts: some_vec(&plan.extra_hosts),
        ..Default::default()
    };

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: some_vec(&spec.command),
        cmd: some_vec(&spec.args),
        env: some_vec(&spec.env),
        labels: Some(container_labels(plan, node_id)),
        hostname: spec.hostname.clone().filter(|h| !h.is_empty()),
        user: spec.user.clone().filter(|u| !u.is_empty()),
        working_dir: spec.workdir.clone().filter(|w| !w.is_empty()),
        stop_signal: spec.stop_signal.clone().filter(|s| !s.is_empty()),
        stop_timeout: Some(grace_secs(spec.stop_grace_period.as_std())),
        healthcheck,
        exposed_ports: if exposed_ports.is_empty() { None } else { Some(exposed_ports) },
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Exposes the plan's ingress target ports (and, for a task on a network, the TCP ports its
/// image exposes: `image_exposed`) and publishes each on a host port the engine picks, bound to
/// `host_ip` (all addresses when `None`).
pub fn publish_ingress(body: &mut ContainerCreateBody, plan: &TaskPlan, image_exposed: &[u16], host_ip: Option<&str>) {
    let mut targets = plan.ingress_targets.clone();
    if plan.networked {
        targets.extend(image_exposed);
        targets.sort_unstable();
        targets.dedup();
    }
    if targets.is_empty() {
        return;
    }
    let host_config = body.host_config.get_or_insert_with(Default::default);
    let bindings = host_config.port_bindings.get_or_insert_with(HashMap::new);
    let exposed = body.exposed_ports.get_or_insert_with(Vec::new);
    for target in &targets {
        let key = format!("{target}/tcp");
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding { host_ip: host_ip.map(str::to_string), host_port: Some(String::new()) });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shoal_types::{
        ContainerSpec, GoDuration, HealthConfig as SpecHealth, PortConfig, PortProtocol, ResourceAmounts, Resources,
    };

    use super::*;

    fn plan() -> TaskPlan {
        TaskPlan {
            task_id: "t1abc".into(),
            service_id: "svc1".into(),
            service_name: "web".into(),
            slot: 3,
            node_id: "node1".into(),
            container: ContainerSpec { image: "shoal/busybox:1".into(), ..ContainerSpec::default() },
            resources: Resources::default(),
            ports: Vec::new(),
            ingress_targets: Vec::new(),
            adopts: None,
            files: Vec::new(),
            networked: false,
            extra_hosts: Vec::new(),
        }
    }

    #[test]
    fn names_follow_swarm() {
        let mut p = plan();
        assert_eq!(container_name(&p), "web.3.t1abc");
        p.slot = 0;
        assert_eq!(container_name(&p), "web.node1.t1abc");
    }

    #[test]
    fn minimal_spec_keeps_image_defaults() {
        let body = container_body(&plan(), "node1");
        assert_eq!(body.image.as_deref(), Some("shoal/busybox:1"));
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.cmd, None);
        assert_eq!(body.env, None);
        assert_eq!(body.healthcheck, None);
        assert_eq!(body.hostname, None);
        assert_eq!(body.user, None);
        assert_eq!(body.working_dir, None);
        assert_eq!(body.stop_signal, None);
        assert_eq!(body.exposed_ports, None);
        assert_eq!(body.stop_timeout, Some(10), "default grace period is 10s");
        let hc = body.host_config.unwrap();
        assert_eq!(hc.nano_cpus, None);
        assert_eq!(hc.memory, None);
        assert_eq!(hc.pids_limit, None);
        assert_eq!(hc.memory_reservation, None);
        assert_eq!(hc.port_bindings, None);
        assert_eq!(hc.restart_policy.unwrap().name, Some(RestartPolicyNameEnum::NO));
    }

    #[test]
    fn labels_carry_task_identity_and_win_over_spec_labels() {
        let mut p = plan();
        p.container.labels = BTreeMap::from([
            ("app".to_string(), "shop".to_string()),
            (LABEL_NODE_ID.to_string(), "spoofed".to_string()),
        ]);
        let labels = container_body(&p, "node1").labels.unwrap();
        assert_eq!(labels["app"], "shop");
        assert_eq!(labels[LABEL_SERVICE_ID], "svc1");
        assert_eq!(labels[LABEL_SERVICE_NAME], "web");
        assert_eq!(labels[LABEL_TASK_ID], "t1abc");
        assert_eq!(labels[LABEL_TASK_SLOT], "3");
        assert_eq!(labels[LABEL_NODE_ID], "node1");
        assert_eq!(labels.len(), 6);
    }

    #[test]
    fn full_spec_maps_every_field() {
        let mut p = plan();
        p.container = ContainerSpec {
            image: "shoal/busybox:2".into(),
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec!["echo hi".into()],
            env: vec!["A=1".into(), "B=two".into()],
            labels: BTreeMap::new(),
            hostname: Some("box".into()),
            user: Some("1000:1000".into()),
            workdir: Some("/srv".into()),
            stop_grace_period: GoDuration::from_millis(1500),
            stop_signal: Some("SIGINT".into()),
            stop_drain_timeout: None,
            healthcheck: Some(SpecHealth {
                test: vec!["CMD-SHELL".into(), "true".into()],
                interval: GoDuration::from_secs(2),
                timeout: GoDuration::from_millis(500),
                retries: 4,
                start_period: GoDuration::ZERO,
            }),
            mounts: vec![
                shoal_types::Mount::parse("type=bind,src=/srv/conf,dst=/etc/app,ro,bind-propagation=rslave").unwrap(),
                shoal_types::Mount::parse(
                    "src=data,dst=/data,volume-driver=local,volume-opt=type=tmpfs,volume-label=app=shop",
                )
                .unwrap(),
                shoal_types::Mount::parse("type=tmpfs,dst=/scratch,tmpfs-size=1m,tmpfs-mode=700").unwrap(),
            ],
            secrets: Vec::new(),
            configs: Vec::new(),
        };
        p.resources = Resources {
            limits: ResourceAmounts { nano_cpus: 500_000_000, memory_bytes: 64 << 20, pids: 100 },
            reservations: ResourceAmounts { nano_cpus: 250_000_000, memory_bytes: 32 << 20, pids: 0 },
        };
        let body = container_body(&p, "node1");
        assert_eq!(body.image.as_deref(), Some("shoal/busybox:2"));
        assert_eq!(body.entrypoint, Some(vec!["/bin/sh".to_string(), "-c".to_string()]));
        assert_eq!(body.cmd, Some(vec!["echo hi".to_string()]));
        assert_eq!(body.env, Some(vec!["A=1".to_string(), "B=two".to_string()]));
        assert_eq!(body.hostname.as_deref(), Some("box"));
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.working_dir.as_deref(), Some("/srv"));
        assert_eq!(body.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(body.stop_timeout, Some(2), "1.5s rounds up");
        let health = body.healthcheck.unwrap();
        assert_eq!(health.test, Some(vec!["CMD-SHELL".to_string(), "true".to_string()]));
        assert_eq!(health.interval, Some(2_000_000_000));
        assert_eq!(health.timeout, Some(500_000_000));
        assert_eq!(health.retries, Some(4));
        assert_eq!(health.start_period, None, "zero inherits");
        assert_eq!(health.start_interval, None);
        let hc = body.host_config.unwrap();
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.memory, Some(64 << 20));
        assert_eq!(hc.pids_limit, Some(100));
        assert_eq!(hc.memory_reservation, Some(32 << 20));
        let mounts = hc.mounts.unwrap();
        let json = serde_json::to_value(&mounts).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"Target": "/etc/app", "Source": "/srv/conf", "Type": "bind", "ReadOnly": true,
                 "BindOptions": {"Propagation": "rslave"}},
                {"Target": "/data", "Source": "data", "Type": "volume",
                 "VolumeOptions": {"Labels": {"app": "shop"},
                                   "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}}}},
                {"Target": "/scratch", "Type": "tmpfs", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 448}},
            ])
        );
    }

    #[test]
    fn none_disables_the_image_healthcheck() {
        let mut p = plan();
        p.container.healthcheck = Some(SpecHealth { test: vec!["NONE".into()], ..SpecHealth::default() });
        let health = container_body(&p, "n").healthcheck.unwrap();
        assert_eq!(health.test, Some(vec!["NONE".to_string()]));
        assert_eq!(health.interval, None);
        assert_eq!(health.retries, None);
    }

    #[test]
    fn only_host_mode_ports_are_published() {
        let mut p = plan();
        p.ports = vec![
            PortConfig { target: 80, published: 8080, protocol: PortProtocol::Tcp, mode: PublishMode::Host },
            PortConfig { target: 53, published: 0, protocol: PortProtocol::Udp, mode: PublishMode::Host },
            PortConfig { target: 443, published: 443, protocol: PortProtocol::Tcp, mode: PublishMode::Ingress },
        ];
        let body = container_body(&p, "n");
        let mut exposed = body.exposed_ports.unwrap();
        exposed.sort();
        assert_eq!(exposed, vec!["53/udp".to_string(), "80/tcp".to_string()]);
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        assert_eq!(bindings.len(), 2);
        assert_eq!(bindings["80/tcp"], Some(vec![PortBinding { host_ip: None, host_port: Some("8080".into()) }]));
        assert_eq!(bindings["53/udp"], Some(vec![PortBinding { host_ip: None, host_port: Some(String::new()) }]));
    }

    #[test]
    fn grace_rounds_up_to_whole_seconds() {
        assert_eq!(grace_secs(Duration::ZERO), 0);
        assert_eq!(grace_secs(Duration::from_millis(1)), 1);
        assert_eq!(grace_secs(Duration::from_secs(10)), 10);
        assert_eq!(grace_secs(Duration::from_millis(10_001)), 11);
        assert_eq!(grace_secs(Duration::from_secs(u64::MAX)), i64::from(i32::MAX));
    }

    #[test]
    fn body_serializes_as_the_engine_expects() {
        let mut p = plan();
        p.ports =
            vec![PortConfig { target: 80, published: 8080, protocol: PortProtocol::Tcp, mode: PublishMode::Host }];
        let json = serde_json::to_value(container_body(&p, "n")).unwrap();
        assert_eq!(json["ExposedPorts"], serde_json::json!({"80/tcp": {}}));
        assert_eq!(json["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"], "8080");
        assert_eq!(json["HostConfig"]["RestartPolicy"]["Name"], "no");
        assert_eq!(json["Labels"][LABEL_TASK_ID], "t1abc");
    }
}
