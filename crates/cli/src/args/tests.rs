//! Flag → spec conversion and refusal of bad input, without a manager.

use std::collections::BTreeMap;

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

/// The long help of a subcommand, as `shoal <path> --help` prints it.
fn help_of(path: &[&str]) -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let mut sub = &mut cmd;
    for name in path {
        sub = sub.find_subcommand_mut(name).expect("subcommand");
    }
    sub.render_long_help().to_string()
}

/// The lines of each section of a help text, by heading (`Arguments`, `Options`, …).
fn help_sections(help: &str) -> BTreeMap<String, String> {
    let mut sections: BTreeMap<String, String> = BTreeMap::new();
    let mut heading = String::new();
    for line in help.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            heading = line.trim_end_matches(':').to_string();
        } else {
            let text = sections.entry(heading.clone()).or_default();
            text.push_str(line);
            text.push('\n');
        }
    }
    sections
}

/// Issue 21: the global flags are listed apart from a command's own options, and the
/// positionals under "Arguments" (they were under the last flag group's heading).
#[test]
fn help_lists_arguments_and_global_flags_under_their_own_headings() {
    for (path, positional) in [(&["service", "create"][..], "<IMAGE>"), (&["service", "update"][..], "<SERVICE>")] {
        let help = help_of(path);
        let sections = help_sections(&help);
        let section = |name: &str| sections.get(name).unwrap_or_else(|| panic!("{path:?}: no {name}:\n{help}"));
        assert!(section("Arguments").contains(positional), "{path:?}: {positional} under Arguments:\n{help}");
        assert!(!section("Endpoint options").contains(positional), "{path:?}:\n{help}");
        for flag in ["--host <ADDR>", "--tls-dir <DIR>"] {
            assert!(section("Global options").contains(flag), "{path:?}: {flag} under Global options:\n{help}");
            assert!(!section("Options").contains(flag), "{path:?}: {flag} not among the options:\n{help}");
        }
        assert!(section("Options").contains("--detach"), "{path:?}:\n{help}");
    }
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
fn job_modes_take_dockers_defaults() {
    let job = |total, max_concurrent| ServiceMode::ReplicatedJob { total_completions: total, max_concurrent };
    assert_eq!(spec(&["--mode", "replicated-job", "busybox"]).mode, job(1, 1));
    assert_eq!(spec(&["--mode", "replicated-job", "--replicas", "5", "busybox"]).mode, job(5, 5));
    assert_eq!(spec(&["--mode", "replicated-job", "--max-concurrent", "2", "busybox"]).mode, job(2, 2));
    let both = spec(&["--mode", "replicated-job", "--replicas", "5", "--max-concurrent", "2", "busybox"]);
    assert_eq!(both.mode, job(5, 2));
    assert_eq!(both.task.restart_policy.condition, shoal_types::RestartCondition::OnFailure);
    let global = spec(&["--mode", "global-job", "--restart-condition", "none", "busybox"]);
    assert_eq!(global.mode, ServiceMode::GlobalJob);
    assert_eq!(global.task.restart_policy.condition, shoal_types::RestartCondition::None);
    for bad in [
        &["--mode", "replicated", "--max-concurrent", "2", "busybox"][..],
        &["--mode", "global-job", "--replicas", "2", "busybox"],
        &["--mode", "replicated-job", "--max-concurrent", "0", "busybox"],
    ] {
        let mut argv = vec!["service", "create"];
        argv.extend_from_slice(bad);
        assert!(parse(&argv).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn job_modes_refuse_update_and_rollback_flags_naming_the_flag() {
    for (args, message) in [
        (
            &["--mode", "replicated-job", "--update-parallelism", "2"][..],
            "--update-parallelism cannot be used with --mode replicated-job: jobs may not have an update config",
        ),
        (
            &["--mode", "global-job", "--update-order", "start-first", "--update-delay", "1s"],
            "--update-delay cannot be used with --mode global-job: jobs may not have an update config",
        ),
        (
            &["--mode", "replicated-job", "--rollback-max-failure-ratio", "0.5"],
            "--rollback-max-failure-ratio cannot be used with --mode replicated-job: jobs may not have a rollback config",
        ),
    ] {
        let mut argv = vec!["service", "create"];
        argv.extend_from_slice(args);
        argv.push("busybox");
        let err = parse(&argv).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict, "{args:?}");
        assert!(err.to_string().contains(message), "{args:?}: {err}");
    }
    // Without those flags a job's spec has the default configs the API accepts.
    for mode in ["replicated-job", "global-job"] {
        let s = spec(&["--mode", mode, "busybox"]);
        assert_eq!((&s.update_config, &s.rollback_config), (&UpdateConfig::default(), &UpdateConfig::default()));
        s.validate().unwrap();
    }
    // Services take them.
    assert_eq!(spec(&["--update-parallelism", "2", "busybox"]).update_config.parallelism, 2);
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
            ..UpdateConfig::default()
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
            ..UpdateConfig::default()
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
fn completion_and_man_parse_and_refuse_other_shells() {
    let Cli { command: Command::Completion(args), .. } = parse(&["completion", "zsh"]).unwrap() else { panic!() };
    assert_eq!(args.shell, CompletionShell::Zsh);
    let err = parse(&["completion", "tcsh"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let text = err.render().to_string();
    assert!(text.contains("'tcsh'") && text.contains("bash, zsh, fish"), "{text}");
    let Cli { command: Command::Man(args), .. } = parse(&["man", "out/man1"]).unwrap() else { panic!() };
    assert_eq!(args.dir, std::path::PathBuf::from("out/man1"));
    assert_eq!(parse(&["man"]).unwrap_err().exit_code(), 2);
}

/// `--with-registry-auth` is accepted where docker has it and changes nothing in the spec.
#[test]
fn with_registry_auth_is_accepted_and_changes_nothing() {
    let args = create_args(&["--with-registry-auth", "--name", "web", "busybox"]);
    assert!(args.wait.with_registry_auth);
    assert_eq!(args.to_spec().unwrap(), spec(&["busybox"]));
    assert!(parse(&["service", "create", "--with-registry-auth", "busybox"]).unwrap().with_registry_auth());
    assert!(!parse(&["service", "create", "busybox"]).unwrap().with_registry_auth());

    let update = update_args(&["--with-registry-auth", "--image", "busybox:2"]);
    assert!(update.wait.with_registry_auth);
    let mut with = current_spec();
    update.apply(&mut with).unwrap();
    let mut without = current_spec();
    update_args(&["--image", "busybox:2"]).apply(&mut without).unwrap();
    assert_eq!(with, without);
    // Scripts pass it to every update, --rollback included.
    assert!(update_args(&["--rollback", "--with-registry-auth"]).check_usage().is_ok());
    assert!(parse(&["service", "update", "--with-registry-auth", "web"]).unwrap().with_registry_auth());

    let deploy = parse(&["stack", "deploy", "--with-registry-auth", "-c", "a.yml", "app"]).unwrap();
    assert!(deploy.with_registry_auth());
    assert!(!parse(&["stack", "deploy", "-c", "a.yml", "app"]).unwrap().with_registry_auth());
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
        ("--mode", "job", "possible values: replicated, global, replicated-job, global-job"),
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
        Command::Service(ServiceCommand::Ls(ListArgs { quiet: true, filters: vec![], format: ListOutput::Table }))
    );
    assert_eq!(
        cmd(&["service", "list", "--format", "json"]),
        Command::Service(ServiceCommand::Ls(ListArgs { quiet: false, filters: vec![], format: ListOutput::Json }))
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
    assert_eq!(cmd(&["node", "ls"]), Command::Node(NodeCommand::Ls(NodeLsArgs::default())));
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
    assert_eq!(
        cmd(&["cluster", "update", "--max-replicas", "200000"]),
        Command::Cluster(ClusterCommand::Update(ClusterUpdateArgs {
            max_replicas: Some(200_000),
            task_history_limit: None,
            revision_history_limit: None
        }))
    );
}

#[test]
fn cluster_update_needs_a_setting_and_refuses_zero() {
    assert_eq!(parse(&["cluster", "update"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
    let err = parse(&["cluster", "update", "--max-replicas", "0"]).unwrap_err().to_string();
    assert!(err.contains("invalid value '0' for '--max-replicas <N>': 0 is below the minimum of 1"), "{err}");
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

// ---- service update / rollback / scale ----

fn update_args(args: &[&str]) -> UpdateArgs {
    let mut full = vec!["service", "update"];
    full.extend_from_slice(args);
    full.push("web");
    match parse(&full) {
        Ok(Cli { command: Command::Service(ServiceCommand::Update(update)), .. }) => *update,
        Ok(other) => panic!("parsed as {other:?}"),
        Err(e) => panic!("{args:?} refused: {}", e.render()),
    }
}

/// A service spec with something in every field the update flags touch.
fn current_spec() -> ServiceSpec {
    let mut s = ServiceSpec::new("web", "shoal/busybox:1");
    s.mode = ServiceMode::Replicated { replicas: 3 };
    s.labels.insert("tier".into(), "web".into());
    s.labels.insert("team".into(), "a".into());
    let c = &mut s.task.container;
    c.args = vec!["sleep".into(), "100".into()];
    c.env = vec!["A=1".into(), "B=2".into(), "C=3".into()];
    c.labels.insert("c1".into(), "v1".into());
    c.hostname = Some("h".into());
    s.task.force_update = 3;
    s.task.placement.constraints =
        vec![Constraint::parse("node.labels.zone==east").unwrap(), Constraint::parse("node.role!=manager").unwrap()];
    s.task.placement.preferences = vec![PlacementPreference::parse("spread=node.labels.rack").unwrap()];
    s.task.resources.limits.memory_bytes = 256 << 20;
    s.task.restart_policy.max_attempts = 7;
    s.update_config.parallelism = 2;
    s.update_config.delay = secs(10);
    s.rollback_config.order = UpdateOrder::StartFirst;
    s.endpoint.ports = vec![
        PortConfig { target: 80, published: 8080, protocol: PortProtocol::Tcp, mode: PublishMode::Ingress },
        PortConfig { target: 53, published: 5353, protocol: PortProtocol::Udp, mode: PublishMode::Host },
    ];
    s.validate().unwrap();
    s
}

/// `current_spec()` after `service update <args> web`.
fn updated(args: &[&str]) -> ServiceSpec {
    let mut s = current_spec();
    update_args(args).apply(&mut s).unwrap();
    s
}

#[test]
fn update_without_flags_changes_nothing() {
    assert_eq!(updated(&[]), current_spec());
    assert_eq!(updated(&["-d", "-q"]), current_spec());
    let args = update_args(&[]);
    assert_eq!(args.service, "web");
    assert!(!args.rollback && !args.force && !args.detach);
}

#[test]
fn update_image_args_and_replicas() {
    let mut expected = current_spec();
    expected.task.container.image = "shoal/busybox:2".into();
    assert_eq!(updated(&["--image", "shoal/busybox:2"]), expected);

    let mut expected = current_spec();
    expected.task.container.args = vec!["sh".into(), "-c".into(), "echo hi; sleep 1".into()];
    assert_eq!(updated(&["--args", "sh -c 'echo hi; sleep 1'"]), expected);
    expected.task.container.args = Vec::new();
    assert_eq!(updated(&["--args", ""]), expected, "an empty --args clears them");

    let mut expected = current_spec();
    expected.mode = ServiceMode::Replicated { replicas: 5 };
    assert_eq!(updated(&["--replicas", "5"]), expected);
}

/// A replicated job as the CLI creates it (default update and rollback configs).
fn job_spec() -> ServiceSpec {
    let mut s = ServiceSpec::new("web", "shoal/busybox:1");
    s.mode = ServiceMode::ReplicatedJob { total_completions: 4, max_concurrent: 2 };
    s
}

#[test]
fn update_replicas_and_max_concurrent_of_a_replicated_job() {
    let job = |total_completions, max_concurrent| ServiceMode::ReplicatedJob { total_completions, max_concurrent };
    let apply = |args: &[&str]| {
        let mut s = job_spec();
        update_args(args).apply(&mut s).map(|()| s.mode)
    };
    assert_eq!(apply(&["--replicas", "6"]), Ok(job(6, 2)), "--replicas is the completions");
    assert_eq!(apply(&["--max-concurrent", "3"]), Ok(job(4, 3)));
    assert_eq!(apply(&["--replicas", "1", "--max-concurrent", "1"]), Ok(job(1, 1)));
    assert_eq!(apply(&[]), Ok(job(4, 2)));

    // Any other mode: refused naming the flag and the mode, the spec unchanged.
    for (mode, name) in [
        (ServiceMode::Replicated { replicas: 2 }, "replicated"),
        (ServiceMode::Global, "global"),
        (ServiceMode::GlobalJob, "global-job"),
    ] {
        let mut s = job_spec();
        s.mode = mode;
        let before = s.clone();
        let err = update_args(&["--max-concurrent", "3", "--image", "nginx:1"]).apply(&mut s).unwrap_err();
        assert_eq!(
            err,
            format!("--max-concurrent 3: can only be used with a replicated-job service (this one is {name})")
        );
        assert_eq!(s, before);
    }
    let err = parse(&["service", "update", "--max-concurrent", "0", "web"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
    assert!(err.to_string().contains("'--max-concurrent <N>': 0 is below the minimum 1"), "{err}");
}

#[test]
fn update_flags_of_a_job_are_refused_naming_the_flag() {
    let mut s = job_spec();
    let before = s.clone();
    let err = update_args(&["--update-monitor", "1s"]).apply(&mut s).unwrap_err();
    assert_eq!(
        err,
        "--update-monitor cannot be used with a replicated-job service: jobs may not have an update config"
    );
    let err = update_args(&["--image", "nginx:1", "--rollback-parallelism", "0"]).apply(&mut s).unwrap_err();
    assert_eq!(
        err,
        "--rollback-parallelism cannot be used with a replicated-job service: jobs may not have a rollback config"
    );
    s.mode = ServiceMode::GlobalJob;
    let err = update_args(&["--update-failure-action", "continue"]).apply(&mut s).unwrap_err();
    assert!(err.starts_with("--update-failure-action cannot be used with a global-job service"), "{err}");
    s.mode = before.mode;
    assert_eq!(s, before);
    // Services take them.
    assert_eq!(updated(&["--update-monitor", "1s"]).update_config.monitor, secs(1));
}

#[test]
fn update_replicas_of_a_global_service_is_refused() {
    let mut s = current_spec();
    s.mode = ServiceMode::Global;
    let before = s.clone();
    let err = update_args(&["--replicas", "2"]).apply(&mut s).unwrap_err();
    assert_eq!(err, "replicas can only be used with replicated mode");
    assert_eq!(s, before);
    // Other flags work on global services.
    update_args(&["--image", "nginx:1"]).apply(&mut s).unwrap();
    assert_eq!(s.task.container.image, "nginx:1");
}

#[test]
fn update_force_increments_force_update() {
    assert_eq!(updated(&["--force"]).task.force_update, 4);
    let mut s = current_spec();
    let force = update_args(&["--force"]);
    force.apply(&mut s).unwrap();
    force.apply(&mut s).unwrap();
    assert_eq!(s.task.force_update, 5);
    let mut expected = current_spec();
    expected.task.force_update = 4;
    assert_eq!(updated(&["--force"]), expected, "nothing else changes");
}

#[test]
fn update_env_add_and_rm() {
    let env = |args: &[&str]| updated(args).task.container.env;
    assert_eq!(env(&["--env-add", "D=4"]), ["A=1", "B=2", "C=3", "D=4"]);
    assert_eq!(env(&["--env-add", "B=two"]), ["A=1", "B=two", "C=3"], "replaced where it stands");
    assert_eq!(env(&["--env-rm", "B"]), ["A=1", "C=3"]);
    assert_eq!(env(&["--env-rm", "B=whatever"]), ["A=1", "C=3"], "only the key counts");
    assert_eq!(env(&["--env-rm", "NOPE"]), ["A=1", "B=2", "C=3"]);
    assert_eq!(env(&["--env-rm", "A", "--env-rm", "C", "--env-add", "E=5"]), ["B=2", "E=5"]);
    // docker removes first, then adds: a key both removed and added ends up added.
    assert_eq!(env(&["--env-add", "A=9", "--env-rm", "A"]), ["B=2", "C=3", "A=9"]);
    let mut expected = current_spec();
    expected.task.container.env = vec!["A=1".into(), "B=2".into(), "C=3".into(), "D=4".into()];
    assert_eq!(updated(&["--env-add", "D=4"]), expected, "nothing else changes");
}

#[test]
fn update_env_drops_duplicates_of_a_replaced_key() {
    let mut env = vec!["A=1".to_string(), "B=2".to_string(), "A=3".to_string()];
    flags::update_env(&mut env, &["A=9".to_string()], &[]);
    assert_eq!(env, ["A=9", "B=2"]);
}

#[test]
fn update_service_and_container_labels() {
    let s = updated(&["--label-add", "tier=api", "--label-add", "new=1", "--label-rm", "team"]);
    let mut expected = current_spec();
    expected.labels.insert("tier".into(), "api".into());
    expected.labels.insert("new".into(), "1".into());
    expected.labels.remove("team");
    assert_eq!(s, expected);
    // docker adds, then removes.
    assert!(!updated(&["--label-add", "x=1", "--label-rm", "x"]).labels.contains_key("x"));
    assert_eq!(updated(&["--label-rm", "absent"]), current_spec());

    let s = updated(&["--container-label-add", "c2=v2", "--container-label-rm", "c1"]);
    let mut expected = current_spec();
    expected.task.container.labels.clear();
    expected.task.container.labels.insert("c2".into(), "v2".into());
    assert_eq!(s, expected);
}

#[test]
fn update_container_settings() {
    let s = updated(&[
        "--hostname",
        "h2",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "--entrypoint",
        "/bin/sh -c",
        "--stop-grace-period",
        "30s",
        "--stop-signal",
        "SIGINT",
    ]);
    let mut expected = current_spec();
    let c = &mut expected.task.container;
    c.hostname = Some("h2".into());
    c.user = Some("nobody".into());
    c.workdir = Some("/tmp".into());
    c.command = vec!["/bin/sh".into(), "-c".into()];
    c.stop_grace_period = secs(30);
    c.stop_signal = Some("SIGINT".into());
    assert_eq!(s, expected);
}

#[test]
fn update_constraints_add_and_rm() {
    let constraints = |args: &[&str]| -> Vec<String> {
        updated(args).task.placement.constraints.iter().map(ToString::to_string).collect()
    };
    assert_eq!(
        constraints(&["--constraint-add", "node.labels.rack==r1"]),
        ["node.labels.zone==east", "node.role!=manager", "node.labels.rack==r1"]
    );
    assert_eq!(
        constraints(&["--constraint-add", "node.labels.zone == east"]),
        ["node.labels.zone==east", "node.role!=manager"],
        "an existing constraint is not added twice"
    );
    assert_eq!(constraints(&["--constraint-rm", "node.labels.zone==east"]), ["node.role!=manager"]);
    assert_eq!(constraints(&["--constraint-rm", "node.role != manager"]), ["node.labels.zone==east"]);
    assert_eq!(constraints(&["--constraint-rm", "not a constraint"]), ["node.labels.zone==east", "node.role!=manager"]);
    assert_eq!(
        constraints(&["--constraint-rm", "node.labels.zone==east", "--constraint-add", "node.labels.zone==west"]),
        ["node.role!=manager", "node.labels.zone==west"]
    );
    let mut expected = current_spec();
    expected.task.placement.constraints.remove(0);
    assert_eq!(updated(&["--constraint-rm", "node.labels.zone==east"]), expected, "nothing else changes");
}

#[test]
fn update_placement_prefs_add_and_rm_and_max_replicas() {
    let prefs = |args: &[&str]| -> Vec<String> {
        updated(args).task.placement.preferences.iter().map(ToString::to_string).collect()
    };
    assert_eq!(
        prefs(&["--placement-pref-add", "spread=node.labels.zone"]),
        ["spread=node.labels.rack", "spread=node.labels.zone"]
    );
    assert!(prefs(&["--placement-pref-rm", "spread=node.labels.rack"]).is_empty());
    // docker removes, then adds.
    assert_eq!(
        prefs(&["--placement-pref-add", "spread=node.labels.rack", "--placement-pref-rm", "spread=node.labels.rack"]),
        ["spread=node.labels.rack"]
    );
    let mut expected = current_spec();
    expected.task.placement.max_replicas_per_node = 2;
    assert_eq!(updated(&["--replicas-max-per-node", "2"]), expected);
}

#[test]
fn update_publish_add_and_rm() {
    let ports = |args: &[&str]| updated(args).endpoint.ports;
    let p8080 = PortConfig { target: 80, published: 8080, protocol: PortProtocol::Tcp, mode: PublishMode::Ingress };
    let p5353 = PortConfig { target: 53, published: 5353, protocol: PortProtocol::Udp, mode: PublishMode::Host };
    let p9090 = PortConfig { target: 90, published: 9090, protocol: PortProtocol::Tcp, mode: PublishMode::Ingress };
    assert_eq!(ports(&["--publish-add", "9090:90"]), [p8080.clone(), p5353.clone(), p9090.clone()]);
    assert_eq!(ports(&["--publish-add", "8080:80"]), [p8080.clone(), p5353.clone()], "not added twice");
    assert_eq!(ports(&["--publish-rm", "80"]), vec![p5353.clone()]);
    assert_eq!(ports(&["--publish-rm", "53"]), [p8080.clone(), p5353.clone()], "53/tcp is not published");
    assert_eq!(ports(&["--publish-rm", "53/udp"]), vec![p8080.clone()]);
    assert_eq!(ports(&["--publish-rm", "target=53,protocol=udp,mode=ingress"]), [p8080.clone(), p5353.clone()]);
    let moved = PortConfig { published: 8081, ..p8080.clone() };
    assert_eq!(ports(&["--publish-rm", "80", "--publish-add", "8081:80"]), [p5353.clone(), moved]);
    let mut expected = current_spec();
    expected.endpoint.mode = EndpointMode::Dnsrr;
    expected.endpoint.ports.truncate(1);
    assert_eq!(updated(&["--publish-rm", "53/udp", "--endpoint-mode", "dnsrr"]), expected);
}

#[test]
fn update_resource_restart_and_health_groups_change_only_given_fields() {
    let mut expected = current_spec();
    expected.task.resources.reservations.nano_cpus = 500_000_000;
    expected.task.resources.limits.pids = 50;
    assert_eq!(updated(&["--reserve-cpu", "0.5", "--limit-pids", "50"]), expected);

    let mut expected = current_spec();
    expected.task.restart_policy.condition = RestartCondition::OnFailure;
    assert_eq!(updated(&["--restart-condition", "on-failure"]), expected);
    assert_eq!(updated(&["--restart-condition", "on-failure"]).task.restart_policy.max_attempts, 7);

    let mut s = current_spec();
    s.task.container.healthcheck = Some(HealthConfig { test: vec!["NONE".into()], ..HealthConfig::default() });
    update_args(&["--health-cmd", "true", "--health-retries", "2"]).apply(&mut s).unwrap();
    assert_eq!(
        s.task.container.healthcheck,
        Some(HealthConfig { test: vec!["CMD-SHELL".into(), "true".into()], retries: 2, ..HealthConfig::default() })
    );
    update_args(&["--health-interval", "7s"]).apply(&mut s).unwrap();
    let health = s.task.container.healthcheck.clone().unwrap();
    assert_eq!((health.interval, health.retries, health.test.len()), (secs(7), 2, 2), "the rest is kept");
    update_args(&["--no-healthcheck"]).apply(&mut s).unwrap();
    assert_eq!(s.task.container.healthcheck.unwrap().test, ["NONE"]);
}

#[test]
fn update_and_rollback_config_groups_change_only_given_fields() {
    let s = updated(&["--update-failure-action", "rollback", "--update-monitor", "1s"]);
    assert_eq!(
        s.update_config,
        UpdateConfig {
            parallelism: 2,
            delay: secs(10),
            failure_action: FailureAction::Rollback,
            monitor: secs(1),
            ..UpdateConfig::default()
        }
    );
    assert_eq!(s.rollback_config, current_spec().rollback_config);
    let s = updated(&["--rollback-parallelism", "0", "--rollback-max-failure-ratio", "0.5"]);
    assert_eq!(
        s.rollback_config,
        UpdateConfig {
            parallelism: 0,
            max_failure_ratio: 0.5,
            order: UpdateOrder::StartFirst,
            ..UpdateConfig::default()
        }
    );
    assert_eq!(s.update_config, current_spec().update_config);
    let s = updated(&["--update-order", "start-first", "--update-parallelism", "0", "--update-delay", "0s"]);
    assert_eq!(
        (s.update_config.order, s.update_config.parallelism, s.update_config.delay),
        (UpdateOrder::StartFirst, 0, secs(0))
    );
}

#[test]
fn rollback_cannot_be_combined_with_other_flags() {
    for extra in [
        &["--image", "x"][..],
        &["--force"],
        &["--replicas", "2"],
        &["--env-add", "A=1"],
        &["--update-delay", "1s"],
        &["--rollback-parallelism", "2"],
        &["--publish-rm", "80"],
        &["--no-healthcheck"],
    ] {
        let mut args = vec!["service", "update", "--rollback"];
        args.extend_from_slice(extra);
        args.push("web");
        let err = parse(&args).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict, "{extra:?}");
        assert_eq!(err.exit_code(), 2);
        let text = err.render().to_string();
        assert!(text.starts_with("error: other flags may not be combined with --rollback"), "{extra:?}: {text}");
        assert!(text.contains("Usage: shoal service update"), "{text}");
    }
    let ok = update_args(&["--rollback", "-d", "-q"]);
    assert!(ok.rollback && ok.detach && ok.quiet);
    ok.check_usage().unwrap();
    // The pure conversion refuses the combination too.
    let combined = UpdateArgs { rollback: true, force: true, service: "web".into(), ..UpdateArgs::default() };
    assert_eq!(combined.check_usage().unwrap_err(), "other flags may not be combined with --rollback");
    assert_eq!(combined.apply(&mut current_spec()).unwrap_err(), "other flags may not be combined with --rollback");
}

#[test]
fn rollback_command_parses() {
    let cmd = |args: &[&str]| parse(args).unwrap().command;
    assert_eq!(
        cmd(&["service", "rollback", "web"]),
        Command::Service(ServiceCommand::Rollback(RollbackArgs {
            detach: false,
            quiet: false,
            service: "web".into(),
            ..Default::default()
        }))
    );
    assert_eq!(
        cmd(&["service", "rollback", "-d", "-q", "web"]),
        Command::Service(ServiceCommand::Rollback(RollbackArgs {
            detach: true,
            quiet: true,
            service: "web".into(),
            ..Default::default()
        }))
    );
    assert_eq!(parse(&["service", "rollback"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
    assert_eq!(parse(&["service", "rollback", "--image", "x", "web"]).unwrap_err().kind(), ErrorKind::UnknownArgument);
}

#[test]
fn update_bad_values_are_refused_naming_flag_and_value() {
    let cases: &[(&str, &str, &str)] = &[
        ("--args", "sh -c 'oops", "unterminated single quote"),
        ("--entrypoint", "\"x", "unterminated double quote"),
        ("--image", " ", "must not be empty"),
        ("--replicas", "-1", "must not be negative"),
        ("--env-add", "=1", "non-empty key"),
        ("--env-rm", "A B", "environment variable name"),
        ("--label-add", "=x", "non-empty key"),
        ("--container-label-add", "=x", "non-empty key"),
        ("--constraint-add", "node.labels.a=b", "constraint expected one operator"),
        ("--placement-pref-add", "pack=node.labels.x", "only spread is supported"),
        ("--placement-pref-rm", "spread", "placement preference"),
        ("--publish-add", "80/icmp", "invalid protocol"),
        ("--publish-rm", "abc", "target port"),
        ("--update-failure-action", "explode", "possible values: pause, continue, rollback"),
        ("--rollback-failure-action", "rollback", "possible values: pause, continue"),
        ("--update-order", "sideways", "possible values: start-first, stop-first"),
        ("--restart-delay", "1x", "invalid duration"),
        ("--limit-memory", "5x", "invalid size"),
        ("--endpoint-mode", "rr", "possible values: vip, dnsrr"),
    ];
    for (flag, value, reason) in cases {
        let err = match parse(&["service", "update", flag, value, "web"]) {
            Ok(cli) => panic!("{flag} {value} was accepted: {cli:?}"),
            Err(e) => e,
        };
        assert_eq!(err.exit_code(), 2, "{flag} {value}");
        let text = err.render().to_string();
        assert!(text.starts_with(&format!("error: invalid value '{value}' for '{flag} <")), "{flag} {value}: {text}");
        assert!(text.contains(reason), "{flag} {value}: expected {reason:?} in {text}");
    }
    // Create-only flags are not update flags.
    for flag in ["--env", "--constraint", "--publish", "--mode", "--name"] {
        let err = parse(&["service", "update", flag, "x", "web"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownArgument, "{flag}");
    }
}

#[test]
fn update_result_is_validated_by_the_spec_rules() {
    let mut s = current_spec();
    update_args(&["--reserve-memory", "1k"]).apply(&mut s).unwrap();
    assert_eq!(
        s.validate().unwrap_err().to_string(),
        "task.resources.reservations.memory_bytes: 1024 bytes is below the minimum of 4MiB"
    );
    let mut s = current_spec();
    update_args(&["--image", "Busybox"]).apply(&mut s).unwrap();
    assert!(s.validate().unwrap_err().to_string().starts_with("task.container.image:"));
}

#[test]
fn scale_arguments() {
    let scale = |args: &[&str]| {
        let mut full = vec!["service", "scale"];
        full.extend_from_slice(args);
        parse(&full)
    };
    assert_eq!(
        scale(&["web=5", "api=0"]).unwrap().command,
        Command::Service(ServiceCommand::Scale(ScaleArgs {
            detach: false,
            scales: vec![("web".into(), 5), ("api".into(), 0)],
            change_cause: None
        }))
    );
    assert_eq!(
        scale(&["-d", "web=1"]).unwrap().command,
        Command::Service(ServiceCommand::Scale(ScaleArgs {
            detach: true,
            scales: vec![("web".into(), 1)],
            ..Default::default()
        }))
    );
    for (bad, reason) in [
        ("web", "invalid scale specifier"),
        ("web=", "invalid scale specifier"),
        ("=3", "invalid scale specifier"),
        ("web=x", "invalid replicas value \"x\""),
        ("web=-1", "must not be negative"),
        ("web=1.5", "invalid replicas value"),
    ] {
        let err = scale(&["api=1", bad]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad}");
        let text = err.render().to_string();
        assert!(text.starts_with(&format!("error: invalid value '{bad}' for '<SERVICE=REPLICAS>...'")), "{text}");
        assert!(text.contains(reason), "{bad}: expected {reason:?} in {text}");
    }
    assert_eq!(scale(&[]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
}

// ---- service ps / node ps ----

#[test]
fn ps_arguments_and_filters() {
    let cli = parse(&[
        "service",
        "ps",
        "-f",
        "name=web.1",
        "--filter",
        "desired-state=Running",
        "--filter",
        "node=m1",
        "-f",
        "id=abc",
        "--no-trunc",
        "-q",
        "web",
        "api",
    ])
    .unwrap();
    let Command::Service(ServiceCommand::Ps(ps)) = cli.command else { panic!("not ps") };
    assert_eq!(ps.services, ["web", "api"]);
    assert_eq!(
        ps.list.filters,
        [
            TaskFilter::Name("web.1".into()),
            TaskFilter::DesiredState(shoal_types::TaskState::Running),
            TaskFilter::Node("m1".into()),
            TaskFilter::Id("abc".into()),
        ]
    );
    assert!(ps.list.no_trunc && ps.list.quiet && !ps.list.no_resolve);
    assert_eq!(ps.list.format, ListOutput::Table);
    let accepted = parse(&["service", "ps", "-f", "desired-state=accepted", "web"]).unwrap();
    let Command::Service(ServiceCommand::Ps(ps)) = accepted.command else { panic!("not ps") };
    assert_eq!(ps.list.filters, [TaskFilter::DesiredState(shoal_types::TaskState::Accepted)]);

    for (bad, reason) in [
        ("color=red", "unknown filter key \"color\""),
        ("desired-state=sideways", "invalid desired-state \"sideways\""),
        ("name", "expected KEY=VALUE"),
        ("name=", "must not be empty"),
    ] {
        let text = parse(&["service", "ps", "-f", bad, "web"]).unwrap_err().render().to_string();
        assert!(text.starts_with(&format!("error: invalid value '{bad}' for '--filter <KEY=VALUE>'")), "{text}");
        assert!(text.contains(reason), "{bad}: {text}");
    }
    assert_eq!(parse(&["service", "ps"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
    let node_ps = parse(&["node", "ps", "--format", "json", "n1"]).unwrap();
    let Command::Node(NodeCommand::Ps(ps)) = node_ps.command else { panic!("not node ps") };
    assert_eq!((ps.nodes, ps.list.format), (vec!["n1".to_string()], ListOutput::Json));
}

// ---- node update ----

fn node_update_args(args: &[&str]) -> NodeUpdateArgs {
    let mut full = vec!["node", "update"];
    full.extend_from_slice(args);
    full.push("n1");
    match parse(&full) {
        Ok(Cli { command: Command::Node(NodeCommand::Update(update)), .. }) => update,
        Ok(other) => panic!("parsed as {other:?}"),
        Err(e) => panic!("{args:?} refused: {}", e.render()),
    }
}

#[test]
fn node_update_availability_and_labels() {
    use shoal_types::{Availability, NodeRole, NodeSpec};
    let current = || {
        let mut spec = NodeSpec { role: NodeRole::Worker, availability: Availability::Active, ..NodeSpec::default() };
        spec.labels.insert("zone".into(), "east".into());
        spec
    };
    let apply = |args: &[&str]| {
        let mut spec = current();
        node_update_args(args).apply(&mut spec).map(|()| spec)
    };
    assert_eq!(apply(&[]).unwrap(), current());
    for (text, availability) in
        [("drain", Availability::Drain), ("pause", Availability::Pause), ("active", Availability::Active)]
    {
        let spec = apply(&["--availability", text]).unwrap();
        assert_eq!(spec, NodeSpec { availability, ..current() });
    }
    let spec = apply(&["--label-add", "rack=r1", "--label-add", "zone=west", "--label-add", "flag"]).unwrap();
    assert_eq!(
        spec.labels.into_iter().collect::<Vec<_>>(),
        [("flag".into(), String::new()), ("rack".into(), "r1".into()), ("zone".into(), "west".into())]
    );
    let spec = apply(&["--label-rm", "zone", "--availability", "drain"]).unwrap();
    assert!(spec.labels.is_empty());
    assert_eq!(spec.availability, Availability::Drain);
    assert_eq!(apply(&["--label-rm", "rack"]).unwrap_err(), "key rack doesn't exist in node's labels");
    // A key added by the same command may be removed by it (docker adds first).
    assert!(!apply(&["--label-add", "rack=1", "--label-rm", "rack"]).unwrap().labels.contains_key("rack"));

    let err = parse(&["node", "update", "--availability", "off", "n1"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
    assert_eq!(err.exit_code(), 2);
    assert!(err.render().to_string().contains("[possible values: active, pause, drain]"));
    assert_eq!(parse(&["node", "update", "--label-add", "=x", "n1"]).unwrap_err().exit_code(), 2);
    assert_eq!(parse(&["node", "update"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
}

// ---- events ----

#[test]
fn events_filters() {
    let events = |args: &[&str]| {
        let mut full = vec!["events"];
        full.extend_from_slice(args);
        parse(&full)
    };
    let Command::Events(args) = events(&[]).unwrap().command else { panic!("not events") };
    assert_eq!(args.format, EventFormat::Text);
    assert_eq!(args.selection().unwrap(), EventSelection::default());

    let cli = events(&[
        "--filter",
        "type=task",
        "-f",
        "type=Service",
        "-f",
        "type=task",
        "-f",
        "service=web",
        "-f",
        "event=update",
        "--format",
        "json",
    ])
    .unwrap();
    let Command::Events(args) = cli.command else { panic!("not events") };
    assert_eq!(args.format, EventFormat::Json);
    assert_eq!(
        args.selection().unwrap(),
        EventSelection {
            types: vec!["task".into(), "service".into()],
            service: "web".into(),
            actions: vec!["update".into()]
        }
    );

    for (bad, reason) in [
        ("type=pod", "unknown event type \"pod\" (allowed: service, task, node, cluster, route)"),
        ("color=red", "unknown filter key \"color\""),
        ("event=explode", "unknown event \"explode\""),
        ("type", "expected KEY=VALUE"),
    ] {
        let err = events(&["-f", bad]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.render().to_string();
        assert!(text.starts_with(&format!("error: invalid value '{bad}' for '--filter <KEY=VALUE>'")), "{text}");
        assert!(text.contains(reason), "{bad}: {text}");
    }
    let err = events(&["-f", "service=a", "-f", "service=b"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
    assert!(err.render().to_string().starts_with("error: only one service filter may be given"));
    assert_eq!(events(&["--format", "yaml"]).unwrap_err().kind(), ErrorKind::InvalidValue);
}

// ---- revisions: --change-cause, --to-revision, rollout, --revision-history-limit ----

#[test]
fn revision_flags_parse_and_refuse_bad_values() {
    let err = |args: &[&str]| parse(args).unwrap_err().to_string();
    let text = err(&["service", "rollback", "--to-revision", "0", "web"]);
    assert!(text.contains("invalid value '0' for '--to-revision <N>': 0 is below the minimum of 1"), "{text}");
    let text = err(&["rollout", "undo", "--to-revision", "abc", "web"]);
    assert!(text.contains("invalid value 'abc' for '--to-revision <N>'"), "{text}");
    let text = err(&["cluster", "update", "--revision-history-limit", "-1"]);
    assert!(text.contains("invalid value '-1' for '--revision-history-limit <N>': must not be negative"), "{text}");
    let text = err(&["cluster", "update", "--revision-history-limit", "101"]);
    assert!(text.contains("101 is above the maximum of 100"), "{text}");
    let long = "x".repeat(4097);
    let text = err(&["service", "update", "--change-cause", &long, "web"]);
    assert!(
        text.contains("--change-cause <TEXT>") && text.contains("4097 bytes is above the maximum of 4096"),
        "{text}"
    );

    match parse(&["service", "rollback", "--to-revision", "3", "--change-cause", "bad release", "web"]).unwrap() {
        Cli { command: Command::Service(ServiceCommand::Rollback(args)), .. } => {
            assert_eq!((args.to_revision, args.change_cause.as_deref()), (Some(3), Some("bad release")));
        }
        other => panic!("parsed as {other:?}"),
    }
    match parse(&["rollout", "history", "--revision", "2", "--format", "json", "web"]).unwrap() {
        Cli { command: Command::Rollout(RolloutCommand::History(args)), .. } => {
            assert_eq!((args.revision, args.format, args.service.as_str()), (Some(2), InfoFormat::Json, "web"));
        }
        other => panic!("parsed as {other:?}"),
    }
    // A cause may go with --rollback, as -d and -q may.
    let args = update_args(&["--rollback", "--change-cause", "why"]);
    assert_eq!(args.check_usage(), Ok(()));
}

// ---- rollout strategies ----

fn create_error(args: &[&str]) -> String {
    let mut full = vec!["service", "create", "--name", "web"];
    full.extend_from_slice(args);
    full.push("busybox");
    match parse(&full) {
        Ok(Cli { command: Command::Service(ServiceCommand::Create(create)), .. }) => create.to_spec().unwrap_err(),
        Ok(other) => panic!("parsed as {other:?}"),
        Err(e) => e.render().to_string(),
    }
}

#[test]
fn strategy_flags_build_the_update_config() {
    use shoal_types::{CanaryStep, Quantity, RolloutStrategy, StepPause};
    let s = spec(&["--update-old-tasks", "remove", "busybox"]);
    assert_eq!(s.update_config.old_tasks, shoal_types::OldTasks::Remove);
    let s = spec(&["--update-strategy", "recreate", "--rollback-max-surge", "1", "busybox"]);
    assert_eq!(s.update_config.strategy, RolloutStrategy::Recreate);
    assert_eq!(s.rollback_config.max_surge, Some(Quantity::Count(1)));
    assert_eq!(s.rollback_config.budget(), Some((Quantity::Count(1), Quantity::Percent(25))));
    let s = spec(&["--update-max-unavailable", "10%", "busybox"]);
    assert_eq!(s.update_config.budget(), Some((Quantity::Percent(25), Quantity::Percent(10))));
    let s = spec(&["--update-step", "1", "--update-step", "50%:30s", "--update-step", "100%", "busybox"]);
    assert_eq!(
        s.update_config.steps,
        [
            CanaryStep { replicas: Quantity::Count(1), pause: StepPause::Approve, traffic: None },
            CanaryStep { replicas: Quantity::Percent(50), pause: StepPause::For(secs(30)), traffic: None },
            CanaryStep { replicas: Quantity::Percent(100), pause: StepPause::For(GoDuration::ZERO), traffic: None },
        ]
    );
    s.validate().unwrap();
}

#[test]
fn strategy_flags_refuse_bad_values_and_exclusive_combinations() {
    for (args, expected) in [
        (&["--update-step", "0", "--update-step", "100%"][..], "replicas 0 is below 1"),
        (&["--update-step", "150%"], "150% is outside 0%-100%"),
        (&["--update-step", "1:forever", "--update-step", "100%"], "pause \"forever\" is neither a duration"),
        (&["--update-step", "1", "--update-step", "50%"], "--update-step 50%: the last step must be 100%"),
        (&["--update-max-surge", "-1"], "must not be negative"),
        (&["--update-max-unavailable", "101%"], "101% is outside 0%-100%"),
        (&["--update-strategy", "bluegreen"], "invalid value 'bluegreen' for '--update-strategy <STRATEGY>'"),
        (
            &["--update-max-surge", "1", "--update-parallelism", "2"],
            "--update-max-surge cannot be used with --update-parallelism",
        ),
        (
            &["--rollback-max-unavailable", "1", "--rollback-order", "start-first"],
            "--rollback-max-unavailable cannot be used with --rollback-order",
        ),
        (
            &["--update-strategy", "recreate", "--update-step", "100%"],
            "--update-strategy recreate cannot be used with --update-step",
        ),
        (&["--update-step", "100%:approve"], "the last step cannot pause"),
        (&["--update-old-tasks", "nuke"], "invalid value 'nuke' for '--update-old-tasks <POLICY>'"),
        (
            &["--update-prepare-ahead", "--update-max-surge", "1"],
            "--update-prepare-ahead cannot be used with --update-max-surge",
        ),
        (
            &["--rollback-prepare-ahead=true", "--rollback-strategy", "recreate"],
            "--rollback-prepare-ahead cannot be used with --rollback-strategy=recreate",
        ),
        (
            &["--update-prepare-ahead", "--update-step", "1", "--update-step", "100%"],
            "--update-prepare-ahead cannot be used with --update-step",
        ),
        (&["--update-prepare-ahead=maybe"], "invalid value 'maybe' for '--update-prepare-ahead[=<BOOL>]'"),
    ] {
        let error = create_error(args);
        assert!(error.contains(expected), "{args:?}: {error}");
    }
}

#[test]
fn choosing_a_way_of_rolling_out_drops_what_the_others_need() {
    use shoal_types::{Quantity, RolloutStrategy};
    // current_spec has parallelism 2: a budget resets it to the default.
    let s = updated(&["--update-max-surge", "1", "--update-max-unavailable", "0"]);
    assert_eq!((s.update_config.parallelism, s.update_config.max_surge), (1, Some(Quantity::Count(1))));
    s.validate().unwrap();
    let mut budgeted = s.clone();
    update_args(&["--update-parallelism", "3"]).apply(&mut budgeted).unwrap();
    assert_eq!((budgeted.update_config.parallelism, budgeted.update_config.budget()), (3, None));
    let mut recreate = s;
    update_args(&["--update-strategy", "recreate"]).apply(&mut recreate).unwrap();
    assert_eq!(recreate.update_config.strategy, RolloutStrategy::Recreate);
    assert_eq!(recreate.update_config.budget(), None);
    recreate.validate().unwrap();
    update_args(&["--update-step", "1", "--update-step", "100%"]).apply(&mut recreate).unwrap();
    assert_eq!(recreate.update_config.strategy, RolloutStrategy::Rolling);
    update_args(&["--update-step", "none"]).apply(&mut recreate).unwrap();
    assert!(recreate.update_config.steps.is_empty());

    // `--update-prepare-ahead` (a switch, `=false` turns it off) goes with parallelism and order;
    // choosing a budget, recreate or steps later drops it.
    let mut prepared = updated(&["--update-prepare-ahead", "--update-parallelism", "5"]);
    assert!(prepared.update_config.prepare_ahead && prepared.update_config.parallelism == 5);
    prepared.validate().unwrap();
    update_args(&["--update-max-surge", "1"]).apply(&mut prepared).unwrap();
    assert!(!prepared.update_config.prepare_ahead);
    prepared.validate().unwrap();
    let mut off = updated(&["--update-prepare-ahead"]);
    update_args(&["--update-prepare-ahead=false"]).apply(&mut off).unwrap();
    assert!(!off.update_config.prepare_ahead);
}

#[test]
fn update_secret_and_config_add_and_rm() {
    let names =
        |refs: Vec<shoal_types::DataReference>| refs.into_iter().map(|r| (r.source, r.target)).collect::<Vec<_>>();
    let pair = |s: &str, t: &str| (s.to_string(), t.to_string());
    let secrets =
        names(updated(&["--secret-add", "pw", "--secret-add", "source=key,target=tls.key"]).task.container.secrets);
    assert_eq!(secrets, [pair("pw", "pw"), pair("key", "tls.key")]);
    let mut s = current_spec();
    update_args(&["--secret-add", "pw", "--config-add", "source=app,target=/etc/app.conf"]).apply(&mut s).unwrap();
    // Removed by name first, then an added one replaces the reference at its target.
    update_args(&["--secret-rm", "pw", "--config-add", "source=app2,target=/etc/app.conf"]).apply(&mut s).unwrap();
    assert!(s.task.container.secrets.is_empty());
    assert_eq!(names(s.task.container.configs.clone()), [pair("app2", "/etc/app.conf")]);
    update_args(&["--config-rm", "app2"]).apply(&mut s).unwrap();
    assert_eq!(s, current_spec(), "nothing else changed");
    let err = parse(&["service", "update", "--secret-add", "source=pw,mode=999", "web"]).unwrap_err().to_string();
    assert!(err.contains("invalid mode \"999\""), "{err}");
}
