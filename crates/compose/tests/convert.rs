//! compose → ServiceSpec, key by key; loading from disk (`.env`, `env_file`); merging; warnings;
//! stack names.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use shoal_compose::{ComposeError, Loaded, NAMESPACE_LABEL, load, load_str, load_with, validate_stack_name};
use shoal_types::{
    Constraint, EndpointMode, FailureAction, GoDuration, HealthConfig, PlacementPreference, PortConfig, PortProtocol,
    PublishMode, RestartCondition, RestartPolicy, ServiceMode, ServiceSpec, UpdateConfig, UpdateOrder,
};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn load_one(yaml: &str) -> Result<Loaded, ComposeError> {
    load_str("app", &[("stack.yml".to_string(), yaml.to_string())], &env(&[("FROM_SHELL", "shell")]), None)
}

/// The spec of service `web` from a stack whose `web` service has the given body (indented
/// four spaces under `services: web:`).
fn web(body: &str) -> ServiceSpec {
    let yaml = format!("services:\n  web:\n    image: shoal/busybox:1\n{}", indent(body));
    let loaded = load_one(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    loaded.services["web"].clone()
}

fn web_err(body: &str) -> String {
    let yaml = format!("services:\n  web:\n    image: shoal/busybox:1\n{}", indent(body));
    load_one(&yaml).map(|l| l.normalized_yaml).unwrap_err().to_string()
}

fn indent(body: &str) -> String {
    body.lines().map(|l| format!("    {l}\n")).collect()
}

fn secs(s: u64) -> GoDuration {
    GoDuration::from_secs(s)
}

#[test]
fn names_and_namespace_labels() {
    let spec = web("");
    assert_eq!(spec.name, "app_web");
    assert_eq!(spec.labels, BTreeMap::from([(NAMESPACE_LABEL.to_string(), "app".to_string())]));
    assert_eq!(spec.task.container.labels[NAMESPACE_LABEL], "app");
    assert_eq!(spec.task.container.image, "shoal/busybox:1");
    // Everything else is at Swarm's defaults.
    let mut expected = ServiceSpec::new("app_web", "shoal/busybox:1");
    expected.labels = spec.labels.clone();
    expected.task.container.labels = spec.task.container.labels.clone();
    // On the stack's default network, as docker puts every stack service without networks.
    expected.task.networks = vec!["app_default".to_string()];
    assert_eq!(spec, expected);
    // A user cannot take the namespace label over.
    let spec =
        web("labels: {com.docker.stack.namespace: other}\ndeploy:\n  labels: {com.docker.stack.namespace: other}");
    assert_eq!(spec.labels[NAMESPACE_LABEL], "app");
    assert_eq!(spec.task.container.labels[NAMESPACE_LABEL], "app");
}

#[test]
fn command_and_entrypoint() {
    let spec = web("entrypoint: [\"/bin/sh\", \"-c\"]\ncommand: echo 'hello world' \"a b\"");
    assert_eq!(spec.task.container.command, ["/bin/sh", "-c"]);
    assert_eq!(spec.task.container.args, ["echo", "hello world", "a b"]);
    let spec = web("entrypoint: /entry.sh --flag\ncommand: [sleep, 10]");
    assert_eq!(spec.task.container.command, ["/entry.sh", "--flag"]);
    assert_eq!(spec.task.container.args, ["sleep", "10"]);
}

#[test]
fn environment_in_both_forms() {
    let list = web("environment:\n  - B=2\n  - A=1\n  - EMPTY=\n  - WITH_EQ=x=y\n  - FROM_SHELL\n  - UNSET_BARE");
    assert_eq!(list.task.container.env, ["A=1", "B=2", "EMPTY=", "FROM_SHELL=shell", "WITH_EQ=x=y"]);
    let map = web("environment:\n  B: 2\n  A: 1\n  EMPTY: \"\"\n  WITH_EQ: x=y\n  FROM_SHELL:\n  UNSET_BARE:");
    assert_eq!(map.task.container.env, list.task.container.env);
    let typed = web("environment:\n  BOOL: true\n  FLOAT: 1.10\n  OCTAL: 0755\n  YES: yes");
    assert_eq!(typed.task.container.env, ["BOOL=true", "FLOAT=1.10", "OCTAL=0755", "YES=yes"]);
}

#[test]
fn env_file_then_environment() {
    let yaml = "services:\n  web:\n    image: shoal/busybox:1\n    env_file:\n      - conf/common.env\n      - path: conf/optional.env\n        required: false\n    environment:\n      - OVERRIDE=environment\n";
    let files = BTreeMap::from([(
        PathBuf::from("deploy/conf/common.env"),
        "COMMON=1\nOVERRIDE=file\nFROM_SHELL\nNOT_IN_SHELL\n".to_string(),
    )]);
    let mut read =
        |path: &Path| files.get(path).cloned().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"));
    let loaded = load_with(
        "app",
        &[("deploy/stack.yml".to_string(), yaml.to_string())],
        &env(&[("FROM_SHELL", "shell")]),
        None,
        &mut read,
    )
    .unwrap();
    assert_eq!(loaded.services["web"].task.container.env, ["COMMON=1", "FROM_SHELL=shell", "OVERRIDE=environment"]);

    let missing = "services:\n  web:\n    image: shoal/busybox:1\n    env_file: nope.env\n";
    let err = load_with("app", &[("stack.yml".into(), missing.into())], &BTreeMap::new(), None, &mut read).unwrap_err();
    assert_eq!(err.to_string(), "stack.yml:4:15: services.web.env_file: cannot read nope.env: no such file");
}

#[test]
fn container_labels_and_service_labels() {
    let spec = web("labels:\n  - a=1\n  - flag\ndeploy:\n  labels:\n    - svc=yes");
    assert_eq!(spec.task.container.labels["a"], "1");
    assert_eq!(spec.task.container.labels["flag"], "");
    assert!(!spec.task.container.labels.contains_key("svc"));
    assert_eq!(spec.labels["svc"], "yes");
    assert!(!spec.labels.contains_key("a"));
    let map = web("labels: {a: 1, flag: \"\"}\ndeploy:\n  labels: {svc: \"yes\"}");
    assert_eq!((map.labels, map.task.container.labels), (spec.labels, spec.task.container.labels));
}

#[test]
fn ports() {
    let spec = web(
        "ports:\n  - \"8080:80\"\n  - \"80\"\n  - target: 53\n    published: 5353\n    protocol: udp\n    mode: host\n  - target: 443\n    published: 8443\n    protocol: tcp\n    mode: host",
    );
    let port = |target, published, protocol, mode| PortConfig { target, published, protocol, mode };
    assert_eq!(
        spec.endpoint.ports,
        [
            port(80, 8080, PortProtocol::Tcp, PublishMode::Ingress),
            port(80, 0, PortProtocol::Tcp, PublishMode::Ingress),
            port(53, 5353, PortProtocol::Udp, PublishMode::Host),
            port(443, 8443, PortProtocol::Tcp, PublishMode::Host),
        ]
    );
}

#[test]
fn healthcheck() {
    let spec = web(
        "healthcheck:\n  test: [\"CMD\", \"true\"]\n  interval: 10s\n  timeout: 3s\n  retries: 4\n  start_period: 1m",
    );
    assert_eq!(
        spec.task.container.healthcheck,
        Some(HealthConfig {
            test: vec!["CMD".into(), "true".into()],
            interval: secs(10),
            timeout: secs(3),
            retries: 4,
            start_period: secs(60),
        })
    );
    let shell = web("healthcheck:\n  test: curl -f http://localhost/ || exit 1");
    assert_eq!(shell.task.container.healthcheck.unwrap().test, ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]);
    let disabled = web("healthcheck:\n  disable: true");
    assert_eq!(disabled.task.container.healthcheck.unwrap().test, ["NONE"]);
}

#[test]
fn container_settings() {
    let spec = web(
        "stop_grace_period: 1m30s\nstop_signal: SIGQUIT\nhostname: web-{{.Task.Slot}}\nuser: \"1000\"\nworking_dir: /srv",
    );
    let c = &spec.task.container;
    assert_eq!(c.stop_grace_period, secs(90));
    assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
    assert_eq!(c.hostname.as_deref(), Some("web-{{.Task.Slot}}"));
    assert_eq!(c.user.as_deref(), Some("1000"));
    assert_eq!(c.workdir.as_deref(), Some("/srv"));
    assert_eq!(web("user: 1000").task.container.user.as_deref(), Some("1000"));
}

#[test]
fn deploy_mode_and_replicas() {
    assert_eq!(web("").mode, ServiceMode::Replicated { replicas: 1 });
    assert_eq!(web("deploy:\n  replicas: 5").mode, ServiceMode::Replicated { replicas: 5 });
    assert_eq!(web("deploy:\n  replicas: \"5\"").mode, ServiceMode::Replicated { replicas: 5 });
    assert_eq!(web("deploy:\n  replicas: 0").mode, ServiceMode::Replicated { replicas: 0 });
    assert_eq!(web("deploy:\n  mode: replicated").mode, ServiceMode::Replicated { replicas: 1 });
    assert_eq!(web("deploy:\n  mode: global").mode, ServiceMode::Global);
    let job = web("deploy:\n  mode: replicated-job\n  replicas: 3");
    assert_eq!(job.mode, ServiceMode::ReplicatedJob { total_completions: 3, max_concurrent: 3 });
    assert_eq!(job.task.restart_policy.condition, RestartCondition::OnFailure);
    let job = web("deploy:\n  mode: global-job\n  restart_policy:\n    condition: any");
    assert_eq!(job.mode, ServiceMode::GlobalJob);
    assert_eq!(job.task.restart_policy.condition, RestartCondition::Any);
}

#[test]
fn jobs_may_not_have_an_update_or_rollback_config() {
    // Refused whatever the block holds, as docker sends it and Swarm refuses it.
    assert_eq!(
        web_err("deploy:\n  mode: replicated-job\n  update_config:\n    parallelism: 1"),
        "stack.yml:6:7: services.web.deploy.update_config: Jobs may not have an update config"
    );
    assert_eq!(
        web_err("deploy:\n  mode: global-job\n  rollback_config:\n    delay: 1s"),
        "stack.yml:6:7: services.web.deploy.rollback_config: Jobs may not have a rollback config"
    );
    // Services may.
    assert_eq!(web("deploy:\n  update_config:\n    parallelism: 2").update_config.parallelism, 2);
}

#[test]
fn update_and_rollback_config() {
    // Without the block: Swarm's defaults.
    assert_eq!(web("").update_config, UpdateConfig::default());
    // A present block: parallelism 1 unless given, monitor 0 → 5s (swarm-semantics §2.9).
    let spec = web("deploy:\n  update_config:\n    delay: 2s\n    monitor: 0s");
    assert_eq!(spec.update_config, UpdateConfig { delay: secs(2), ..UpdateConfig::default() });
    let spec = web(
        "deploy:\n  update_config:\n    parallelism: 3\n    delay: 1s\n    failure_action: rollback\n    monitor: 20s\n    max_failure_ratio: 0.5\n    order: start-first\n  rollback_config:\n    parallelism: 0\n    failure_action: continue\n    order: stop-first",
    );
    assert_eq!(
        spec.update_config,
        UpdateConfig {
            parallelism: 3,
            delay: secs(1),
            failure_action: FailureAction::Rollback,
            monitor: secs(20),
            max_failure_ratio: 0.5,
            order: UpdateOrder::StartFirst,
            ..UpdateConfig::default()
        }
    );
    assert_eq!(
        spec.rollback_config,
        UpdateConfig { parallelism: 0, failure_action: FailureAction::Continue, ..UpdateConfig::default() }
    );
}

#[test]
fn restart_policy() {
    let spec = web(
        "deploy:\n  restart_policy:\n    condition: on-failure\n    delay: 10s\n    max_attempts: 3\n    window: 1m",
    );
    assert_eq!(
        spec.task.restart_policy,
        RestartPolicy { condition: RestartCondition::OnFailure, delay: secs(10), max_attempts: 3, window: secs(60) }
    );
    let spec = web("deploy:\n  restart_policy:\n    condition: none");
    assert_eq!(
        spec.task.restart_policy,
        RestartPolicy { condition: RestartCondition::None, ..RestartPolicy::default() }
    );
}

#[test]
fn legacy_restart_key() {
    let policy = |body: &str| web(body).task.restart_policy;
    let any = RestartPolicy::default();
    let on_failure =
        |n| RestartPolicy { condition: RestartCondition::OnFailure, max_attempts: n, ..RestartPolicy::default() };
    assert_eq!(policy("restart: always"), any);
    assert_eq!(policy("restart: unless-stopped"), any);
    assert_eq!(policy("restart: on-failure"), on_failure(0));
    assert_eq!(policy("restart: on-failure:3"), on_failure(3));
    assert_eq!(policy("restart: \"no\""), any, "\"no\" leaves Swarm's default, any");
    assert_eq!(policy("restart: no"), any);
    // deploy.restart_policy wins, with a warning.
    let yaml = "services:\n  web:\n    image: shoal/busybox:1\n    restart: on-failure:3\n    deploy:\n      restart_policy:\n        condition: none\n";
    let loaded = load_one(yaml).unwrap();
    assert_eq!(loaded.services["web"].task.restart_policy.condition, RestartCondition::None);
    assert_eq!(loaded.warnings, ["services.web.restart: ignored because services.web.deploy.restart_policy is set"]);
}

#[test]
fn placement() {
    let spec = web(
        "deploy:\n  placement:\n    constraints:\n      - node.role == manager\n      - node.labels.disk != hdd\n    preferences:\n      - spread: node.labels.zone\n      - spread: node.labels.rack\n    max_replicas_per_node: 1",
    );
    let p = &spec.task.placement;
    assert_eq!(
        p.constraints,
        [Constraint::parse("node.role==manager").unwrap(), Constraint::parse("node.labels.disk!=hdd").unwrap()]
    );
    assert_eq!(
        p.preferences,
        [
            PlacementPreference { spread: "node.labels.zone".into() },
            PlacementPreference { spread: "node.labels.rack".into() }
        ]
    );
    assert_eq!(p.max_replicas_per_node, 1);
}

#[test]
fn resources() {
    let spec = web(
        "deploy:\n  resources:\n    limits:\n      cpus: \"0.5\"\n      memory: 1G\n      pids: 64\n    reservations:\n      cpus: 0.25\n      memory: 67108864",
    );
    let r = &spec.task.resources;
    assert_eq!((r.limits.nano_cpus, r.limits.memory_bytes, r.limits.pids), (500_000_000, 1 << 30, 64));
    assert_eq!((r.reservations.nano_cpus, r.reservations.memory_bytes), (250_000_000, 64 << 20));
    let spec = web("deploy:\n  resources:\n    limits:\n      cpus: 2\n      memory: 128Mi");
    assert_eq!(
        (spec.task.resources.limits.nano_cpus, spec.task.resources.limits.memory_bytes),
        (2_000_000_000, 128 << 20)
    );
}

#[test]
fn endpoint_mode() {
    assert_eq!(web("").endpoint.mode, EndpointMode::Vip);
    assert_eq!(web("deploy:\n  endpoint_mode: dnsrr").endpoint.mode, EndpointMode::Dnsrr);
    assert_eq!(web("deploy:\n  endpoint_mode: vip").endpoint.mode, EndpointMode::Vip);
}

#[test]
fn every_spec_passes_validation() {
    let spec = web("deploy:\n  replicas: 2");
    spec.validate().unwrap();
}

#[test]
fn value_errors_name_file_line_column_and_key() {
    assert_eq!(
        web_err("deploy:\n  replicas: three"),
        "stack.yml:5:17: services.web.deploy.replicas: invalid type: string \"three\", expected an integer"
    );
    assert_eq!(
        web_err("deploy:\n  update_config:\n    order: sideways"),
        "stack.yml:6:16: services.web.deploy.update_config.order: unknown order \"sideways\" (allowed: stop-first, start-first)"
    );
    assert_eq!(
        web_err("stop_grace_period: -1s"),
        "stack.yml:4:24: services.web.stop_grace_period: invalid duration \"-1s\": cannot be negative"
    );
    assert_eq!(web_err("imagee: x"), "stack.yml:4:5: services.web.imagee: unknown key (did you mean \"image\"?)");
}

#[test]
fn unsupported_keys_are_warnings() {
    let yaml = "services:\n  web:\n    image: shoal/busybox:1\n    build: .\n    logging: {driver: none}\n    networks:\n      front: {aliases: [www]}\n    x-custom: 1\nnetworks:\n  front:\n    ipam: {driver: default}\nx-top: {a: 1}\n";
    let loaded = load_one(yaml).unwrap();
    assert_eq!(
        loaded.warnings,
        [
            "networks.front.ipam: not supported by shoal; ignored",
            "services.web.build: not supported by shoal; ignored",
            "services.web.logging: not supported by shoal; ignored",
            "services.web.networks.front.aliases: not supported by shoal; ignored",
        ]
    );
    assert_eq!(loaded.services["web"].task.networks, ["app_front"]);
}

/// `networks:` as `docker stack deploy` reads them: a service without any is on the stack's
/// `default` network; declared ones are `<stack>_<name>`, or their `name:`, or the external
/// name; a list or a mapping in a service; an undeclared one, or a driver other than overlay,
/// is refused where it is written.
#[test]
fn networks_resolve_to_the_stacks_names() {
    let yaml = "services:\n  db:\n    image: shoal/busybox:1\n  api:\n    image: shoal/busybox:1\n    networks: [back, shared, default]\n  web:\n    image: shoal/busybox:1\n    networks:\n      named:\nnetworks:\n  back:\n    driver: overlay\n    attachable: true\n    labels: {tier: back}\n  shared:\n    external: true\n  named:\n    name: front-net\n";
    let loaded = load_one(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.services["db"].task.networks, ["app_default"]);
    assert_eq!(loaded.services["api"].task.networks, ["app_back", "shared", "app_default"]);
    assert_eq!(loaded.services["web"].task.networks, ["front-net"]);
    assert_eq!(loaded.stack.networks["back"].labels["tier"], "back");

    let err =
        load_one("services:\n  db:\n    image: shoal/busybox:1\n    networks: [front]\n").unwrap_err().to_string();
    assert_eq!(
        err,
        "stack.yml:4:16: services.db.networks[0]: undefined network \"front\": declare it under the top-level networks:"
    );
    let err = load_one("services:\n  db:\n    image: shoal/busybox:1\nnetworks:\n  front:\n    driver: bridge\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "stack.yml:6:13: networks.front.driver: driver \"bridge\": shoal networks span the cluster; the only driver is \"overlay\""
    );
    let err = load_one(
        "services:\n  db:\n    image: shoal/busybox:1\nnetworks:\n  front:\n    external: true\n    labels: {a: b}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("networks.front") && err.contains("external"), "{err}");
}

/// `volumes:` as `docker stack deploy` reads them: short and long syntax; named volumes declared
/// at the top level, named `<stack>_<name>` (or their `name:`) and labelled with the stack unless
/// external; relative bind sources from the file's directory; bad ones refused where written.
#[test]
fn volumes_become_mounts() {
    use shoal_types::{Mount, MountType, Propagation, TmpfsOptions};
    let yaml = "services:\n  db:\n    image: shoal/busybox:1\n    volumes:\n      - data:/var/lib/db\n      - /srv/conf:/etc/db:ro\n      - ./seed:/seed:ro,rslave\n      - /cache\n      - type: tmpfs\n        target: /scratch\n        tmpfs: {size: 1m, mode: 448}\n      - type: volume\n        source: shared\n        target: /shared\n        volume: {nocopy: true}\nvolumes:\n  data:\n    driver: local\n    driver_opts: {type: tmpfs, device: tmpfs}\n    labels: {tier: db}\n  shared:\n    external: true\n";
    let loaded = load_one(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let mounts = &loaded.services["db"].task.container.mounts;
    let data = &mounts[0];
    assert_eq!((data.kind, data.source.as_str(), data.target.as_str()), (MountType::Volume, "app_data", "/var/lib/db"));
    assert_eq!(data.volume.driver.as_deref(), Some("local"));
    assert_eq!(data.volume.driver_options["device"], "tmpfs");
    assert_eq!(data.volume.labels["tier"], "db");
    assert_eq!(data.volume.labels["com.docker.stack.namespace"], "app");
    assert_eq!(
        mounts[1],
        Mount {
            kind: MountType::Bind,
            source: "/srv/conf".into(),
            target: "/etc/db".into(),
            readonly: true,
            ..Mount::default()
        }
    );
    assert_eq!(mounts[2].kind, MountType::Bind);
    assert!(mounts[2].source.starts_with('/') && mounts[2].source.ends_with("seed"), "{}", mounts[2].source);
    assert_eq!((mounts[2].readonly, mounts[2].propagation), (true, Some(Propagation::Rslave)));
    assert_eq!((mounts[3].kind, mounts[3].source.as_str()), (MountType::Volume, ""), "anonymous volume");
    assert_eq!(mounts[4].tmpfs, Some(TmpfsOptions { size_bytes: 1 << 20, mode: Some(448) }));
    let shared = &mounts[5];
    assert_eq!(shared.source, "shared", "an external volume keeps its name");
    assert!(shared.volume.no_copy && shared.volume.labels.is_empty());

    for (body, expected) in [
        (
            "volumes: [\"data:/data\"]",
            "stack.yml:4:15: services.web.volumes[0]: undefined volume \"data\": declare it under the top-level volumes:",
        ),
        (
            "volumes: [\"/a:data\"]",
            "stack.yml:4:15: services.web.volumes[0]: invalid mount target \"data\": it must be an absolute path",
        ),
        (
            "volumes: [\"/a:/b:rw:x\"]",
            "stack.yml:4:15: services.web.volumes[0]: invalid volume \"/a:/b:rw:x\": expected [SOURCE:]TARGET[:MODE]",
        ),
        (
            "volumes: [\"/a:/b:fast\"]",
            "stack.yml:4:15: services.web.volumes[0]: invalid volume mode \"fast\" in \"/a:/b:fast\"",
        ),
        (
            "volumes:\n  - type: nfs\n    target: /x",
            "stack.yml:5:15: services.web.volumes[0].type: unknown volume type \"nfs\" (allowed: bind, volume, tmpfs)",
        ),
        (
            "volumes:\n  - type: tmpfs\n    source: x\n    target: /x",
            "stack.yml:5:9: services.web.volumes[0]: a tmpfs mount has no source (got \"x\")",
        ),
    ] {
        let err = web_err(body);
        assert!(err.starts_with(expected), "{body}:\n{err}");
    }
}

#[test]
fn merge_of_two_files() {
    let base = "services:\n  web:\n    image: shoal/busybox:1\n    environment: [A=1, B=1]\n    ports: [\"8080:80\", \"8443:443\"]\n    deploy:\n      replicas: 2\n      update_config: {parallelism: 2}\n";
    let over = "services:\n  web:\n    image: shoal/busybox:2\n    environment: {B: 2}\n    ports: [\"9090:80\"]\n    deploy:\n      update_config: {order: start-first}\n  extra:\n    image: shoal/busybox:1\n";
    let sources = [("a.yml".to_string(), base.to_string()), ("b.yml".to_string(), over.to_string())];
    let loaded = load_str("app", &sources, &BTreeMap::new(), None).unwrap();
    let web = &loaded.services["web"];
    assert_eq!(web.task.container.image, "shoal/busybox:2", "scalars: later wins");
    assert_eq!(web.task.container.env, ["A=1", "B=2"], "environment merges per variable");
    assert_eq!(web.endpoint.ports.len(), 1, "lists: later replaces");
    assert_eq!(web.endpoint.ports[0].published, 9090);
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 2 }, "untouched keys stay");
    assert_eq!((web.update_config.parallelism, web.update_config.order), (2, UpdateOrder::StartFirst));
    assert!(loaded.services.contains_key("extra"));

    // Errors point into the file the value came from.
    let bad = "services:\n  web:\n    deploy:\n      replicas: lots\n";
    let sources = [("a.yml".to_string(), base.to_string()), ("b.yml".to_string(), bad.to_string())];
    let err = load_str("app", &sources, &BTreeMap::new(), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "b.yml:4:17: services.web.deploy.replicas: invalid type: string \"lots\", expected an integer"
    );
}

#[test]
fn interpolation_environment_and_dotenv() {
    let yaml =
        "services:\n  web:\n    image: shoal/busybox:${TAG}\n    environment:\n      - ONLY_DOTENV=${ONLY_DOTENV}\n";
    let sources = [("stack.yml".to_string(), yaml.to_string())];
    let dotenv = "TAG=from-dotenv\nONLY_DOTENV=dot\n";
    let loaded = load_str("app", &sources, &env(&[("TAG", "from-shell")]), Some(dotenv)).unwrap();
    assert_eq!(loaded.services["web"].task.container.image, "shoal/busybox:from-shell", "the environment wins");
    assert_eq!(loaded.services["web"].task.container.env, ["ONLY_DOTENV=dot"]);
    let loaded = load_str("app", &sources, &BTreeMap::new(), Some(dotenv)).unwrap();
    assert_eq!(loaded.services["web"].task.container.image, "shoal/busybox:from-dotenv");

    let err = load_str("app", &sources, &BTreeMap::new(), Some("TAG=1\n2BAD=x\n")).unwrap_err();
    assert_eq!(err.to_string(), ".env:2:1: invalid variable name \"2BAD\" (expected KEY=VALUE)");

    // An unset variable is a warning (as in docker); the empty tag it leaves is refused, and the
    // warning comes with the error.
    let err = load_str("app", &sources, &env(&[("ONLY_DOTENV", "x")]), None).unwrap_err();
    let ComposeError::Warned { warnings, source } = err else { panic!("no warnings carried") };
    assert_eq!(warnings, ["services.web.image: variable TAG is not set; substituting an empty string"]);
    assert!(source.to_string().contains("\"shoal/busybox:\" is not a valid image reference"), "{source}");

    let required = "services:\n  web:\n    image: shoal/busybox:${TAG?tag is required}\n";
    let err = load_str("app", &[("stack.yml".into(), required.into())], &BTreeMap::new(), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stack.yml:3:12: services.web.image: required variable TAG is missing a value: tag is required"
    );
}

#[test]
fn load_reads_files_dotenv_and_env_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/dotenv");
    let files = [dir.join("stack.yml")];
    let loaded = load("app", &files, &env(&[("BARE_FROM_SHELL", "shell")])).unwrap();
    let web = &loaded.services["web"];
    assert_eq!(web.task.container.image, "shoal/busybox:from-dotenv");
    assert_eq!(
        web.task.container.env,
        ["BARE_FROM_SHELL=shell", "DOTENV_VALUE=dot value", "FROM_FILE=1", "OVERRIDDEN=by-environment"]
    );
    let loaded = load("app", &files, &env(&[("TAG", "shell")])).unwrap();
    assert_eq!(loaded.services["web"].task.container.image, "shoal/busybox:shell", "process env wins over .env");

    let err = load("app", &[dir.join("missing-env-file.yml")], &BTreeMap::new()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("missing-env-file.yml:4:15: services.web.env_file: cannot read "), "{text}");
    assert!(text.contains("missing.env"), "{text}");
}

#[test]
fn missing_files() {
    let err = load("app", &[PathBuf::from("/nonexistent/stack.yml")], &BTreeMap::new()).unwrap_err();
    assert!(matches!(err, ComposeError::Read { .. }));
    assert!(err.to_string().starts_with("/nonexistent/stack.yml: cannot read: "), "{err}");
    assert!(matches!(load("app", &[], &BTreeMap::new()), Err(ComposeError::NoFiles)));
    assert!(matches!(load_str("app", &[], &BTreeMap::new(), None), Err(ComposeError::NoFiles)));
}

#[test]
fn stack_names() {
    for good in ["app", "my-stack", "my_stack", "A1", &"s".repeat(61)] {
        validate_stack_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in ["", "-app", "_app", "my stack", "a/b", "a.b", "ünï", &"s".repeat(62)] {
        assert!(validate_stack_name(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        validate_stack_name("my stack").unwrap_err().to_string(),
        "invalid stack name \"my stack\": use letters, digits, '_', '.' and '-', starting with a letter or digit"
    );
    let err = load_str("a.b", &[("s.yml".into(), "services: {web: {image: x}}".into())], &BTreeMap::new(), None);
    assert!(matches!(err, Err(ComposeError::StackName { .. })));
    // A long stack name plus a long service name can still overflow 63 characters.
    let yaml = format!("services:\n  {}:\n    image: x\n", "w".repeat(40));
    let err = load_str(&"s".repeat(30), &[("s.yml".into(), yaml)], &BTreeMap::new(), None).unwrap_err();
    assert!(err.to_string().starts_with("s.yml:2:3: services.wwww"), "{err}");
    assert!(err.to_string().contains("at most 63 characters"), "{err}");
}

#[test]
fn normalized_yaml_is_deterministic_and_reloadable() {
    let yaml = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/full.yml")).unwrap();
    let vars = env(&[("TAG", "1"), ("REPLICAS", "2")]);
    let first = load_str("app", &[("full.yml".into(), yaml.clone())], &vars, None).unwrap();
    let second = load_str("app", &[("full.yml".into(), yaml)], &vars, None).unwrap();
    assert_eq!(first.normalized_yaml, second.normalized_yaml);
    // The normalised form loads to the same services.
    let again = load_str("app", &[("n.yml".into(), first.normalized_yaml.clone())], &BTreeMap::new(), None).unwrap();
    assert_eq!(again.services, first.services);
}

/// An unset variable stays a warning (docker's behaviour), and the image reference it leaves
/// behind is refused with the rule it breaks, the warning carried along to explain it.
#[test]
fn an_unset_tag_variable_is_a_warning_and_the_empty_tag_an_error() {
    let err = load_one("services:\n  web:\n    image: shoal/busybox:${UNSET_TAG}\n").unwrap_err();
    let ComposeError::Warned { warnings, source } = &err else { panic!("not carrying its warnings: {err:?}") };
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("UNSET_TAG"), "{warnings:?}");
    assert_eq!(
        source.to_string(),
        "stack.yml:3:12: services.web.image: \"shoal/busybox:\" is not a valid image reference: has an empty tag \
         after ':' (an unset variable?); a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
    );
    assert_eq!(err.to_string(), source.to_string());
    assert_eq!(err.location().map(|l| l.line), Some(3));
    let err = load_one("services:\n  web:\n    image: shoal/Busy_box:1\n").unwrap_err();
    assert!(err.to_string().contains("repository names must be lowercase"), "{err}");
}

#[test]
fn a_stack_file_from_stdin_is_named_stdin_and_merges_with_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/dotenv");
    let files = [dir.join("stack.yml"), PathBuf::from("-")];
    let mut stdin = || Ok("services:\n  web:\n    deploy:\n      replicas: 3\n".to_string());
    let loaded = shoal_compose::load_from("app", &files, &env(&[]), &mut stdin).expect("loads");
    assert_eq!(loaded.services["web"].mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(loaded.services["web"].task.container.image, "shoal/busybox:from-dotenv", "the file's .env is read");

    let mut bad = || Ok("services:\n  web:\n    image: [1\n".to_string());
    let err = shoal_compose::load_from("app", &[PathBuf::from("-")], &env(&[]), &mut bad).expect_err("bad yaml");
    assert!(err.to_string().starts_with("<stdin>:"), "{err}");
}

#[test]
fn stdin_can_be_given_once() {
    let files = [PathBuf::from("-"), PathBuf::from("-")];
    let mut stdin = || Ok("services: {}\n".to_string());
    let err = shoal_compose::load_from("app", &files, &env(&[]), &mut stdin).expect_err("refused");
    assert!(matches!(err, ComposeError::StdinTwice), "{err}");
    assert_eq!(err.to_string(), "-c - (read the stack file from standard input) may be given only once");
}

/// `x-change-cause` at the top: kept (after interpolation) as the deploy's change cause; not a
/// string, or over 4096 bytes, is refused naming the key.
#[test]
fn x_change_cause_is_the_deploys_cause() {
    let loaded =
        load_one("x-change-cause: release ${FROM_SHELL}\nservices:\n  web:\n    image: shoal/busybox:1\n").unwrap();
    assert_eq!(loaded.stack.change_cause.as_deref(), Some("release shell"));
    assert!(load_one("services:\n  web:\n    image: shoal/busybox:1\n").unwrap().stack.change_cause.is_none());
    let long = "x".repeat(4097);
    let err =
        load_one(&format!("x-change-cause: {long}\nservices:\n  web:\n    image: shoal/busybox:1\n")).unwrap_err();
    assert!(err.to_string().contains("x-change-cause: 4097 bytes is above the maximum of 4096"), "{err}");
    let err = load_one("x-change-cause: [a]\nservices:\n  web:\n    image: shoal/busybox:1\n").unwrap_err();
    assert!(err.to_string().contains("x-change-cause"), "{err}");
}

#[test]
fn strategy_extension_keys() {
    use shoal_types::{CanaryStep, Quantity, RolloutStrategy, StepPause};
    let spec = web(
        "deploy:\n  replicas: 4\n  update_config:\n    x-max-surge: 1\n    x-max-unavailable: 0%\n    x-steps:\n      - replicas: 1\n        traffic: 5%\n      - replicas: 50%\n        pause: 30s\n      - replicas: 100%\n    x-old-tasks: remove\n  rollback_config:\n    x-strategy: recreate",
    );
    assert_eq!(spec.update_config.max_surge, Some(Quantity::Count(1)));
    assert_eq!(spec.update_config.max_unavailable, Some(Quantity::Percent(0)));
    assert_eq!(
        spec.update_config.steps,
        [
            CanaryStep { replicas: Quantity::Count(1), pause: StepPause::Approve, traffic: Some(5) },
            CanaryStep { replicas: Quantity::Percent(50), pause: StepPause::For(secs(30)), traffic: None },
            CanaryStep { replicas: Quantity::Percent(100), pause: StepPause::For(GoDuration::ZERO), traffic: None },
        ]
    );
    assert_eq!(spec.rollback_config.strategy, RolloutStrategy::Recreate);
    assert_eq!(spec.update_config.old_tasks, shoal_types::OldTasks::Remove);
    let spec = web("deploy:\n  update_config:\n    parallelism: 5\n    x-prepare-ahead: true");
    assert!(spec.update_config.prepare_ahead && !spec.rollback_config.prepare_ahead);
    for (body, expected) in [
        (
            "deploy:\n  update_config:\n    x-strategy: bluegreen",
            "stack.yml:6:21: services.web.deploy.update_config.x-strategy: unknown strategy \"bluegreen\" (allowed: rolling, recreate)",
        ),
        (
            "deploy:\n  update_config:\n    x-old-tasks: nuke",
            "stack.yml:6:22: services.web.deploy.update_config.x-old-tasks: unknown old-task policy \"nuke\" (allowed: stop, remove, keep)",
        ),
        (
            "deploy:\n  update_config:\n    x-max-surge: -1",
            "stack.yml:6:22: services.web.deploy.update_config.x-max-surge: invalid value: -1 is negative (expected N or N%, e.g. 1 or 25%)",
        ),
        (
            "deploy:\n  update_config:\n    x-max-unavailable: 101%",
            "stack.yml:6:28: services.web.deploy.update_config.x-max-unavailable: invalid value: 101% is outside 0%-100%",
        ),
        (
            "deploy:\n  update_config:\n    x-steps:\n      - replicas: 1\n      - replicas: 50%",
            "stack.yml:8:23: services.web.deploy.update_config.x-steps[1].replicas: 50% is not 100% (the last step must be 100%)",
        ),
        (
            "deploy:\n  update_config:\n    x-steps:\n      - replicas: 1\n        pause: forever\n      - replicas: 100%",
            "stack.yml:8:20: services.web.deploy.update_config.x-steps[0].pause: invalid pause \"forever\": a duration (e.g. 30s, 5m) or approve",
        ),
        (
            "deploy:\n  rollback_config:\n    x-steps:\n      - replicas: 100%",
            "stack.yml:7:11: services.web.deploy.rollback_config.x-steps: a rollback goes in one go (canary steps apply to update_config only)",
        ),
        (
            "deploy:\n  update_config:\n    parallelism: 2\n    x-max-surge: 1",
            "stack.yml:6:22: services.web.deploy.update_config.parallelism: 2 cannot be used with max_surge/max_unavailable (allowed: the default, 1)",
        ),
        (
            "deploy:\n  update_config:\n    x-max-surge: 1\n    x-prepare-ahead: true",
            "stack.yml:7:26: services.web.deploy.update_config.x-prepare-ahead: cannot be used with max_surge/max_unavailable (allowed with the default rolling update: parallelism and order)",
        ),
        (
            "deploy:\n  update_config:\n    x-prepare-ahead: soon",
            "stack.yml:6:26: services.web.deploy.update_config.x-prepare-ahead: invalid type: string \"soon\", expected a boolean",
        ),
    ] {
        assert_eq!(web_err(body), expected, "{body}");
    }
}

/// `secrets:` and `configs:` as `docker stack deploy` reads them: declared at the top level with
/// `file:` or `external: true`, named `<stack>_<key>` (or their `name:`; the key if external),
/// used by key in short or long syntax with the key as the default target; bad ones refused where
/// written.
#[test]
fn secrets_and_configs_become_references_to_the_stack_s_objects() {
    use shoal_types::DataReference;
    let yaml = "services:\n  db:\n    image: shoal/busybox:1\n    secrets:\n      - pw\n      - source: tls\n        target: /etc/tls.key\n        uid: '999'\n        mode: 0400\n    configs: [conf, shared]\nsecrets:\n  pw: {file: ./pw.txt}\n  tls: {file: /srv/tls.key, name: db_tls}\nconfigs:\n  conf: {file: conf.ini, labels: {tier: db}}\n  shared: {external: true}\n";
    let loaded = load_one(yaml).unwrap();
    let spec = &loaded.services["db"];
    let reference = |source: &str, target: &str| DataReference {
        source: source.into(),
        target: target.into(),
        ..DataReference::named("x")
    };
    assert_eq!(
        spec.task.container.secrets,
        [
            reference("app_pw", "pw"),
            DataReference { uid: "999".into(), mode: 0o400, ..reference("db_tls", "/etc/tls.key") }
        ]
    );
    assert_eq!(spec.task.container.configs, [reference("app_conf", "conf"), reference("shared", "shared")]);
    assert_eq!(loaded.stack.secrets["pw"].file.as_deref(), Some("./pw.txt"));
    assert_eq!(loaded.stack.secrets["pw"].object_name("app", "pw"), "app_pw");
    assert!(loaded.stack.configs["shared"].external);

    let err = |yaml: &str| load_one(yaml).unwrap_err().to_string();
    assert_eq!(
        err("services:\n  db:\n    image: shoal/busybox:1\n    secrets: [nope]\n"),
        "stack.yml:4:15: services.db.secrets[0]: undefined secret \"nope\": declare it under the top-level secrets:"
    );
    assert_eq!(
        err("services:\n  db:\n    image: x\nsecrets:\n  pw: {}\n"),
        "stack.yml:5:3: secrets.pw: a secret needs file: (read at deploy) or external: true (created beforehand)"
    );
    assert!(
        err("services:\n  db:\n    image: x\nsecrets:\n  pw: {file: a, external: true}\n")
            .contains("an external secret exists already")
    );
    assert!(
        err("services:\n  db:\n    image: x\n    secrets: [{source: pw, mode: 999}]\nsecrets:\n  pw: {file: a}\n")
            .contains("invalid mode \"999\": expected a file mode from 0 to 0777")
    );
    assert!(
        err("services:\n  db:\n    image: x\n    secrets: [{source: pw, target: ../x}]\nsecrets:\n  pw: {file: a}\n")
            .contains("target \"../x\": must be a file path without")
    );
    // A value from the environment is not supported: without file or external, refused.
    assert!(
        err("services:\n  db:\n    image: x\nsecrets:\n  pw: {environment: PW}\n").contains("a secret needs file:")
    );
}

#[test]
fn x_routes_become_routes_of_the_stack_over_its_own_services() {
    let yaml = "services:\n  web:\n    image: shoal/web:1\n    deploy:\n      labels: [app=web]\n  canary:\n    image: shoal/web:2\n    deploy:\n      labels: [app=web]\nx-routes:\n  front:\n    publish: \"8080:80\"\n    select: {app: web}\n    weights: {canary: 10}\n";
    let loaded = load_one(yaml).expect("loads");
    let routes = shoal_compose::route_specs("app", &loaded.stack).expect("valid routes");
    assert_eq!(routes.len(), 1);
    let route = &routes[0];
    assert_eq!((route.name.as_str(), route.port, route.target), ("app_front", 8080, 80));
    assert_eq!(route.selector.get("app").map(String::as_str), Some("web"));
    assert_eq!(route.selector.get(NAMESPACE_LABEL).map(String::as_str), Some("app"), "only this stack's services");
    assert_eq!(route.weights, BTreeMap::from([("app_canary".to_string(), 10)]));
    assert!(loaded.normalized_yaml.contains("x-routes:"), "{}", loaded.normalized_yaml);

    let bad = yaml.replace("\"8080:80\"", "\"8080\"");
    let loaded = load_one(&bad).expect("parses");
    let err = shoal_compose::route_specs("app", &loaded.stack).expect_err("refused").to_string();
    assert!(err.contains("x-routes.front.publish") && err.contains("PUBLISHED:TARGET"), "{err}");
    let err = load_one(&yaml.replace("{canary: 10}", "{canary: -3}")).expect_err("refused").to_string();
    assert!(err.contains("from 0 to 100"), "{err}");
    let err = load_one(&yaml.replace("    select: {app: web}\n", "")).expect_err("refused").to_string();
    assert!(err.contains("select is required"), "{err}");
}

#[test]
fn depends_on_and_x_atomic_are_read_and_a_cycle_or_an_unknown_service_is_refused() {
    let yaml = "x-atomic: true\nservices:\n  web:\n    image: shoal/busybox:1\n    depends_on: [api]\n  api:\n    image: shoal/busybox:1\n    depends_on:\n      db: {condition: service_started}\n  db:\n    image: shoal/busybox:1\n";
    let loaded = load_one(yaml).unwrap();
    assert!(loaded.stack.atomic);
    assert_eq!(loaded.stack.services["web"].depends_on, ["api"]);
    assert_eq!(loaded.stack.services["api"].depends_on, ["db"]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

    let unknown = "services:\n  web:\n    image: shoal/busybox:1\n    depends_on: [nosuch]\n";
    assert_eq!(
        load_one(unknown).unwrap_err().to_string(),
        "stack.yml:4:18: services.web.depends_on[0]: service nosuch is not defined in the stack"
    );
    let cycle = "services:\n  a:\n    image: shoal/busybox:1\n    depends_on: [b]\n  b:\n    image: shoal/busybox:1\n    depends_on: [a]\n";
    let err = load_one(cycle).unwrap_err().to_string();
    assert!(err.starts_with("stack.yml:4:18: services.a.depends_on: a cycle: a -> b -> a"), "{err}");
}

/// `expose:` makes ports reachable by name on the service's networks, published nowhere (as
/// `ports: ["80"]`); a mapping is refused, a UDP port ignored with a warning.
#[test]
fn expose_makes_ports_reachable_by_name_only() {
    let loaded = load_one("services:\n  db:\n    image: shoal/busybox:1\n    expose: [\"5432\", 9100, \"53/udp\"]\n    ports: [\"8080:80\"]\n").unwrap_or_else(|e| panic!("{e}"));
    let ports: Vec<(u16, u16)> = loaded.services["db"].endpoint.ports.iter().map(|p| (p.published, p.target)).collect();
    assert_eq!(ports, [(8080, 80), (0, 5432), (0, 9100)]);
    assert!(loaded.services["db"].endpoint.ports.iter().all(|p| p.is_reachable()));
    assert_eq!(loaded.warnings, ["services.db.expose: 53/udp: only TCP ports are reached by name; ignored"]);
    let err =
        load_one("services:\n  db:\n    image: shoal/busybox:1\n    expose: [\"80:80\"]\n").unwrap_err().to_string();
    assert!(err.contains("services.db.expose") && err.contains("not mappings"), "{err}");
}
