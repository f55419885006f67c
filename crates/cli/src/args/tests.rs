//! Flag → spec conversion and refusal of bad input, without a manager.

use clap::CommandFactory;
use clap::error::ErrorKind;
use shoal_types::{
    Constraint, EndpointMode, FailureAction, GoDuration, HealthConfig, PlacementPreference, PortConfig, PortProtocol,
    PublishMode, RestartCondition, ServiceMode, ServiceSpec, UpdateConfig, UpdateOrder,
};

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    let mut full = vec!["shoal"];
    full.extend_from_slice(args);
    Cli::parse_checked(full)
}

fn create_args(args: &[&str]) -> CreateArgs {
    let mut full = vec!["service", "create"];
    full.extend_from_slice(args);
    match parse(&full) {
        Ok(Cli { command: Command::Service(ServiceCommand::Create(create)), .. }) => *create,
        Ok(other) => panic!("parsed as {other:?}"),
        Err(e) => panic!("{args:?} refused: {}", e.render()),
    }
}

/// The spec for `service create --name web <args>`.
fn spec(args: &[&str]) -> ServiceSpec {
    let mut full = vec!["--name", "web"];
    full.extend_from_slice(args);
    create_args(&full).to_spec().unwrap()
}

fn secs(s: u64) -> GoDuration {
    GoDuration::from_secs(s)
}

#[test]
fn the_command_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn no_flags_gives_swarm_defaults() {
    assert_eq!(spec(&["shoal/busybox:1"]), ServiceSpec::new("web", "shoal/busybox:1"));
}

#[test]
fn everything_after_the_image_is_the_command() {
    let s = spec(&["busybox", "sh", "-c", "echo hi; sleep 1"]);
    assert_eq!(s.task.container.args, ["sh", "-c", "echo hi; sleep 1"]);
    assert!(s.task.container.command.is_empty());
    // Like docker, flags after the image belong to the container's command.
    let late = create_args(&["busybox", "--name", "x"]);
    assert_eq!(late.name, None);
    assert_eq!(late.image_and_args, ["busybox", "--name", "x"]);
}

#[test]
fn an_image_is_required() {
    let err = parse(&["service", "create", "--name", "web"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
}

#[test]
fn mode_and_replicas() {
    assert_eq!(spec(&["--replicas", "3", "busybox"]).mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(
        spec(&["--mode", "replicated", "--replicas", "0", "busybox"]).mode,
        ServiceMode::Replicated { replicas: 0 }
    );
    assert_eq!(spec(&["--mode", "replicated", "busybox"]).mode, ServiceMode::Replicated { replicas: 1 });
    assert_eq!(spec(&["--mode", "global", "busybox"]).mode, ServiceMode::Global);
}

#[test]
fn replicas_with_global_mode_is_a_usage_error() {
    let err = parse(&["service", "create", "--mode", "global", "--replicas", "2", "busybox"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
    let text = err.render().to_string();
    assert!(text.contains("replicas can only be used with replicated mode"), "{text}");
    assert!(text.contains("Usage: shoal service create"), "{text}");
    // The pure conversion refuses it too.
    let args = CreateArgs {
        mode: Some(parsers::ModeKind::Global),
        replicas: Some(2),
        image_and_args: vec!["busybox".into()],
        ..CreateArgs::default()
    };
    assert_eq!(args.to_spec().unwrap_err(), "replicas can only be used with replicated mode");
}

#[test]
fn service_labels_and_container_flags() {
    let s = spec(&[
        "-l",
        "tier=web",
        "--label",
        "flag",
        "-e",
        "A=1",
        "--env",
        "B=two=2",
        "--container-label",
        "c=d",
        "--hostname",
        "h1",
        "-u",
        "1000:1000",
        "-w",
        "/srv",
        "--entrypoint",
        "/bin/sh  -c",
        "--stop-grace-period",
        "30s",
        "--stop-signal",
        "SIGINT",
        "busybox",
        "sleep",
        "9",
    ]);
    let mut expected = ServiceSpec::new("web", "busybox");
    expected.labels.insert("tier".into(), "web".into());
    expected.labels.insert("flag".into(), String::new());
    let c = &mut expected.task.container;
    c.args = vec!["sleep".into(), "9".into()];
    c.env = vec!["A=1".into(), "B=two=2".into()];
    c.labels.insert("c".into(), "d".into());
    c.hostname = Some("h1".into());
    c.user = Some("1000:1000".into());
    c.workdir = Some("/srv".into());
    c.command = vec!["/bin/sh".into(), "-c".into()];
    c.stop_grace_period = secs(30);
    c.stop_signal = Some("SIGINT".into());
    assert_eq!(s, expected);
}

#[test]
fn update_flags_land_in_update_config_only() {
    let s = spec(&[
        "--update-parallelism",
        "2",
        "--update-delay",
        "10s",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "1m30s",
        "--update-max-failure-ratio",
        "0.25",
        "--update-order",
        "start-first",
        "busybox",
    ]);
    assert_eq!(
        s.update_config,
        UpdateConfig {
            parallelism: 2,
            delay: secs(10),
            failure_action: FailureAction::Rollback,
            monitor: secs(90),
            max_failure_ratio: 0.25,
            order: UpdateOrder::StartFirst,
        }
    );
    assert_eq!(s.rollback_config, UpdateConfig::default());
    assert_eq!(s.task, ServiceSpec::new("web", "busybox").task);
}

#[test]
fn one_update_flag_changes_one_field() {
    let s = spec(&["--update-parallelism", "0", "busybox"]);
    assert_eq!(s.update_config, UpdateConfig { parallelism: 0, ..UpdateConfig::default() });
    let s = spec(&["--update-delay", "0", "busybox"]);
    assert_eq!(s.update_config, UpdateConfig::default());
}

#[test]
fn rollback_flags_land_in_rollback_config_only() {
    let s = spec(&[
        "--rollback-parallelism",
        "3",
        "--rollback-delay",
        "250ms",
        "--rollback-failure-action",
        "continue",
        "--rollback-monitor",
        "2s",
        "--rollback-max-failure-ratio",
        "1",
        "--rollback-order",
        "start-first",
        "busybox",
    ]);
    assert_eq!(
        s.rollback_config,
        UpdateConfig {
            parallelism: 3,
            delay: GoDuration::from_millis(250),
            failure_action: FailureAction::Continue,
            monitor: secs(2),
            max_failure_ratio: 1.0,
            order: UpdateOrder::StartFirst,
        }
    );
    assert_eq!(s.update_config, UpdateConfig::default());
}

#[test]
fn restart_flags() {
    let s = spec(&[
        "--restart-condition",
        "on-failure",
        "--restart-delay",
        "1s",
        "--restart-max-attempts",
        "3",
        "--restart-window",
        "2m",
        "busybox",
    ]);
    let p = &s.task.restart_policy;
    assert_eq!(p.condition, RestartCondition::OnFailure);
    assert_eq!(p.delay, secs(1));
    assert_eq!(p.max_attempts, 3);
    assert_eq!(p.window, secs(120));
    let s = spec(&["--restart-condition", "none", "busybox"]);
    assert_eq!(s.task.restart_policy.condition, RestartCondition::None);
    assert_eq!(s.task.restart_policy.delay, secs(5), "other restart fields keep their defaults");
}

#[test]
fn resource_flags() {
    let s = spec(&[
        "--reserve-cpu",
        "0.25",
        "--reserve-memory",
        "64m",
        "--limit-cpu",
        "1.5",
        "--limit-memory",
        "1GiB",
        "--limit-pids",
        "100",
        "busybox",
    ]);
    let r = &s.task.resources;
    assert_eq!(r.reservations.nano_cpus, 250_000_000);
    assert_eq!(r.reservations.memory_bytes, 64 << 20);
    assert_eq!(r.reservations.pids, 0);
    assert_eq!(r.limits.nano_cpus, 1_500_000_000);
    assert_eq!(r.limits.memory_bytes, 1 << 30);
    assert_eq!(r.limits.pids, 100);
    s.validate().unwrap();
}

#[test]
fn placement_flags() {
    let s = spec(&[
        "--constraint",
        "node.labels.zone==east",
        "--constraint",
        "node.role!=manager",
        "--placement-pref",
        "spread=node.labels.rack",
        "--replicas-max-per-node",
        "2",
        "busybox",
    ]);
    let p = &s.task.placement;
    assert_eq!(
        p.constraints,
        [Constraint::parse("node.labels.zone==east").unwrap(), Constraint::parse("node.role!=manager").unwrap()]
    );
    assert_eq!(p.preferences, [PlacementPreference::parse("spread=node.labels.rack").unwrap()]);
    assert_eq!(p.max_replicas_per_node, 2);
}

#[test]
fn health_flags() {
    let s = spec(&[
        "--health-cmd",
        "wget -q localhost",
        "--health-interval",
        "10s",
        "--health-timeout",
        "2s",
        "--health-retries",
        "4",
        "--health-start-period",
        "1m",
        "busybox",
    ]);
    assert_eq!(
        s.task.container.healthcheck,
        Some(HealthConfig {
            test: vec!["CMD-SHELL".into(), "wget -q localhost".into()],
            interval: secs(10),
            timeout: secs(2),
            retries: 4,
            start_period: secs(60),
        })
    );
    // Without --health-cmd the image's test is kept (empty test).
    let s = spec(&["--health-interval", "3s", "busybox"]);
    assert_eq!(s.task.container.healthcheck, Some(HealthConfig { interval: secs(3), ..HealthConfig::default() }));
    let s = spec(&["--no-healthcheck", "busybox"]);
    assert_eq!(
        s.task.container.healthcheck,
        Some(HealthConfig { test: vec!["NONE".into()], ..HealthConfig::default() })
    );
    assert_eq!(spec(&["busybox"]).task.container.healthcheck, None);
    let err = parse(&["service", "create", "--no-healthcheck", "--health-retries", "3", "busybox"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
}

#[test]
fn publish_and_endpoint_flags() {
    let s = spec(&[
        "-p",
        "8080:80",
        "--publish",
        "mode=host,target=53,published=5353,protocol=udp",
        "-p",
        "9000",
        "--endpoint-mode",
        "dnsrr",
        "busybox",
    ]);
    assert_eq!(s.endpoint.mode, EndpointMode::Dnsrr);
    assert_eq!(
        s.endpoint.ports,
        [
            PortConfig { target: 80, published: 8080, protocol: PortProtocol::Tcp, mode: PublishMode::Ingress },
            PortConfig { target: 53, published: 5353, protocol: PortProtocol::Udp, mode: PublishMode::Host },
            PortConfig { target: 9000, published: 0, protocol: PortProtocol::Tcp, mode: PublishMode::Ingress },
        ]
    );
}

#[test]
fn detach_and_quiet_are_accepted() {
    let args = create_args(&["-d", "-q", "busybox"]);
    assert!(args.detach && args.quiet);
    let args = create_args(&["--detach", "--quiet", "busybox"]);
    assert!(args.detach && args.quiet);
}

#[test]
fn a_generated_name_is_valid() {
    let s = create_args(&["busybox"]).to_spec().unwrap();
    shoal_types::validate_name("name", &s.name).unwrap();
    s.validate().unwrap();
}

/// Each bad value is refused by clap with a message naming the flag and the value.
#[test]
fn bad_values_are_refused_naming_flag_and_value() {
    let cases: &[(&str, &str, &str)] = &[
        // (flag, value, expected reason fragment)
        ("--update-parallelism", "-1", "must not be negative"),
        ("--update-parallelism", "two", "whole number"),
        ("--update-delay", "abc", "invalid duration \"abc\""),
        ("--update-delay", "-5s", "cannot be negative"),
        ("--update-monitor", "5", "invalid duration"),
        ("--update-max-failure-ratio", "2", "2 is outside [0, 1]"),
        ("--update-max-failure-ratio", "-0.5", "outside [0, 1]"),
        ("--update-max-failure-ratio", "most", "between 0 and 1"),
        ("--update-order", "sideways", "possible values: start-first, stop-first"),
        ("--update-failure-action", "explode", "possible values: pause, continue, rollback"),
        ("--rollback-failure-action", "rollback", "possible values: pause, continue"),
        ("--rollback-parallelism", "-3", "must not be negative"),
        ("--rollback-delay", "soon", "invalid duration"),
        ("--rollback-max-failure-ratio", "1.5", "outside [0, 1]"),
        ("--rollback-order", "random", "possible values"),
        ("--restart-condition", "always", "possible values: none, on-failure, any"),
        ("--restart-delay", "1x", "invalid duration"),
        ("--restart-max-attempts", "-2", "must not be negative"),
        ("--restart-window", "-1m", "cannot be negative"),
        ("--replicas", "-1", "must not be negative"),
        ("--replicas", "many", "whole number"),
        ("--replicas-max-per-node", "-1", "must not be negative"),
        ("--mode", "replicated-job", "possible values: replicated, global"),
        ("--constraint", "node.labels.a=b", "constraint expected one operator from ==, !="),
        ("--constraint", "color==red", "unsupported key"),
        ("--placement-pref", "pack=node.labels.x", "only spread is supported"),
        ("--reserve-cpu", "-1", "invalid CPU amount"),
        ("--limit-cpu", "half", "invalid CPU amount"),
        ("--reserve-memory", "lots", "invalid size"),
        ("--limit-memory", "5x", "invalid size"),
        ("--limit-pids", "-1", "must not be negative"),
        ("--stop-grace-period", "10", "invalid duration"),
        ("--health-interval", "often", "invalid duration"),
        ("--health-retries", "-1", "must not be negative"),
        ("--publish", "80/icmp", "invalid protocol"),
        ("--publish", "published=80", "missing mandatory field \"target\""),
        ("--endpoint-mode", "roundrobin", "possible values: vip, dnsrr"),
        ("--env", "=x", "non-empty key"),
        ("--label", "=x", "non-empty key"),
        ("--name", "-web", "is not a valid name"),
    ];
    for (flag, value, reason) in cases {
        let err = match parse(&["service", "create", flag, value, "busybox"]) {
            Ok(cli) => panic!("{flag} {value} was accepted: {cli:?}"),
            Err(e) => e,
        };
        assert!(
            matches!(err.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue),
            "{flag} {value}: kind {:?}",
            err.kind()
        );
        assert_eq!(err.exit_code(), 2);
        let text = err.render().to_string();
        assert!(text.starts_with(&format!("error: invalid value '{value}' for '{flag} <")), "{flag} {value}: {text}");
        assert!(text.contains(reason), "{flag} {value}: expected {reason:?} in {text}");
    }
}

#[test]
fn host_flag_and_default() {
    let cli = parse(&["--host", "10.0.0.1:4000", "node", "ls"]).unwrap();
    assert_eq!(cli.host, "10.0.0.1:4000");
    let cli = parse(&["node", "ls", "-H", "m2:4242"]).unwrap();
    assert_eq!(cli.host, "m2:4242", "--host is global");
    if std::env::var_os("SHOAL_HOST").is_none() {
        assert_eq!(parse(&["node", "ls"]).unwrap().host, DEFAULT_HOST);
    }
}

#[test]
fn other_commands_parse() {
    let cmd = |args: &[&str]| parse(args).unwrap().command;
    assert_eq!(
        cmd(&["service", "ls", "-q"]),
        Command::Service(ServiceCommand::Ls(ListArgs { quiet: true, format: ListFormat::Table }))
    );
    assert_eq!(
        cmd(&["service", "list", "--format", "json"]),
        Command::Service(ServiceCommand::Ls(ListArgs { quiet: false, format: ListFormat::Json }))
    );
    assert_eq!(
        cmd(&["service", "inspect", "--pretty", "a", "b"]),
        Command::Service(ServiceCommand::Inspect(InspectArgs {
            pretty: true,
            format: None,
            services: vec!["a".into(), "b".into()]
        }))
    );
    assert_eq!(
        cmd(&["service", "inspect", "--format", "json", "a"]),
        Command::Service(ServiceCommand::Inspect(InspectArgs {
            pretty: false,
            format: Some(InspectFormat::Json),
            services: vec!["a".into()]
        }))
    );
    assert_eq!(
        cmd(&["service", "rm", "a", "b"]),
        Command::Service(ServiceCommand::Rm(RmArgs { services: vec!["a".into(), "b".into()] }))
    );
    assert_eq!(cmd(&["node", "ls"]), Command::Node(NodeCommand::Ls(ListArgs::default())));
    assert_eq!(
        cmd(&["node", "rm", "--force", "n1"]),
        Command::Node(NodeCommand::Rm(NodeRmArgs { force: true, nodes: vec!["n1".into()] }))
    );
    assert_eq!(
        cmd(&["node", "demote", "n1"]),
        Command::Node(NodeCommand::Demote(NodeDemoteArgs { nodes: vec!["n1".into()] }))
    );
    assert_eq!(
        cmd(&["node", "inspect", "n1"]),
        Command::Node(NodeCommand::Inspect(NodeInspectArgs { pretty: false, format: None, nodes: vec!["n1".into()] }))
    );
    assert_eq!(
        cmd(&["cluster", "info", "--format", "json", "--local"]),
        Command::Cluster(ClusterCommand::Info(ClusterInfoArgs { local: true, format: InfoFormat::Json }))
    );
}

#[test]
fn usage_mistakes_are_clap_errors() {
    let kind = |args: &[&str]| parse(args).unwrap_err().kind();
    assert_eq!(kind(&["service", "inspect", "--pretty", "--format", "json", "a"]), ErrorKind::ArgumentConflict);
    assert_eq!(kind(&["service", "rm"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(kind(&["service", "ls", "--format", "yaml"]), ErrorKind::InvalidValue);
    assert_eq!(kind(&["service", "frobnicate"]), ErrorKind::InvalidSubcommand);
    assert_eq!(kind(&["service", "create", "--no-such-flag", "busybox"]), ErrorKind::UnknownArgument);
    assert_eq!(kind(&["service", "create", "--name", "web", "-x", "busybox"]), ErrorKind::UnknownArgument);
    let text = parse(&["service", "create", "--no-such-flag", "busybox"]).unwrap_err().render().to_string();
    assert!(text.starts_with("error: unexpected argument '--no-such-flag' found"), "{text}");
    // After the image, dashes belong to the command.
    assert_eq!(create_args(&["busybox", "-x"]).image_and_args, ["busybox", "-x"]);
}
