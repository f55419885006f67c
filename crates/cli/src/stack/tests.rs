//! Deploy planning, stack listing and argument parsing, without a manager.

use std::path::{Path, PathBuf};

use shoal_types::{ServiceMode, ServiceSpec};

use super::*;
use crate::args::{Cli, Command, StackCommand};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples")
}

fn load_example(stack: &str, file: &str) -> Loaded {
    shoal_compose::load(stack, &[examples().join(file)], &BTreeMap::new()).expect("the example loads")
}

/// A service as the manager returns it (the spec went through JSON).
fn service(id: &str, spec: &ServiceSpec) -> Service {
    Service {
        id: id.to_string(),
        version: 42,
        created_at: 1,
        updated_at: 1,
        spec: serde_json::from_str(&serde_json::to_string(spec).unwrap()).unwrap(),
        spec_version: 42,
        previous_spec: None,
        previous_spec_version: None,
        update_status: None,
        status_version: 0,
        revision: 1,
        rollout_id: String::new(),
        group: None,
        virtual_ip: String::new(),
    }
}

fn deployed(loaded: &Loaded) -> Vec<Service> {
    loaded.services.values().enumerate().map(|(i, spec)| service(&format!("id{i}"), spec)).collect()
}

fn labelled(name: &str, stack: Option<&str>) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, "shoal/busybox:1");
    if let Some(stack) = stack {
        spec.labels.insert(NAMESPACE_LABEL.to_string(), stack.to_string());
    }
    spec
}

fn names(plan: &DeployPlan) -> Vec<(&str, &str)> {
    plan.steps
        .iter()
        .map(|step| {
            let what = match step {
                Step::Create(_) => "create",
                Step::Update { .. } => "update",
                Step::Unchanged(_) => "unchanged",
            };
            (step.name(), what)
        })
        .collect()
}

#[test]
fn a_new_stack_creates_every_service_in_name_order() {
    let loaded = load_example("app", "web-worker.yml");
    let plan = plan_deploy("app", &loaded.services, &[], false).unwrap();
    assert_eq!(names(&plan), [("app_web", "create"), ("app_worker", "create")]);
    assert!(plan.remove.is_empty());
    let Step::Create(web) = &plan.steps[0] else { panic!() };
    assert_eq!(web.labels[NAMESPACE_LABEL], "app");
    assert_eq!(web.replicas(), Some(2));
}

#[test]
fn redeploying_the_same_files_changes_nothing() {
    let loaded = load_example("app", "web-worker.yml");
    let plan = plan_deploy("app", &loaded.services, &deployed(&loaded), true).unwrap();
    assert_eq!(names(&plan), [("app_web", "unchanged"), ("app_worker", "unchanged")]);
    assert!(plan.remove.is_empty());
}

#[test]
fn only_the_changed_service_is_updated_with_the_version_read() {
    let v1 = load_example("app", "web-worker.yml");
    let v2 = load_example("app", "web-worker-v2.yml");
    let plan = plan_deploy("app", &v2.services, &deployed(&v1), false).unwrap();
    assert_eq!(names(&plan), [("app_web", "update"), ("app_worker", "unchanged")]);
    let Step::Update { current, spec } = &plan.steps[0] else { panic!() };
    assert_eq!(current.id, "id0");
    assert_eq!(current.version, 42);
    assert_eq!(spec.task.container.image, "shoal/busybox:2");
}

#[test]
fn a_forced_update_is_not_undone_and_is_kept_by_real_changes() {
    let v1 = load_example("app", "web-worker.yml");
    let mut existing = deployed(&v1);
    existing[0].spec.task.force_update = 3;
    let plan = plan_deploy("app", &v1.services, &existing, false).unwrap();
    assert_eq!(names(&plan), [("app_web", "unchanged"), ("app_worker", "unchanged")]);

    let v2 = load_example("app", "web-worker-v2.yml");
    let plan = plan_deploy("app", &v2.services, &existing, false).unwrap();
    let Step::Update { spec, .. } = &plan.steps[0] else { panic!("{plan:?}") };
    assert_eq!(spec.task.force_update, 3);
}

#[test]
fn a_scaled_service_is_scaled_back_to_the_file() {
    let v1 = load_example("app", "web-worker.yml");
    let mut existing = deployed(&v1);
    existing[1].spec.mode = ServiceMode::Replicated { replicas: 5 };
    let plan = plan_deploy("app", &v1.services, &existing, false).unwrap();
    assert_eq!(names(&plan), [("app_web", "unchanged"), ("app_worker", "update")]);
}

#[test]
fn services_outside_the_stack_are_conflicts_and_all_are_reported() {
    let loaded = load_example("app", "web-worker.yml");
    let existing = vec![
        service("a", &labelled("app_web", None)),
        service("b", &labelled("app_worker", Some("other"))),
        service("c", &labelled("unrelated", None)),
    ];
    let problems = plan_deploy("app", &loaded.services, &existing, true).unwrap_err();
    assert_eq!(
        problems,
        [
            "service app_web already exists and is not part of stack app (it has no com.docker.stack.namespace label); remove or rename it, or use another stack name",
            "service app_worker already exists and is not part of stack app (it belongs to stack other); remove or rename it, or use another stack name",
        ]
    );
}

#[test]
fn a_mode_change_is_refused_before_anything_changes() {
    let loaded = load_example("app", "web-worker.yml");
    let mut existing = deployed(&loaded);
    existing[1].spec.mode = ServiceMode::Global;
    let problems = plan_deploy("app", &loaded.services, &existing, false).unwrap_err();
    assert_eq!(
        problems,
        [
            "service app_worker cannot change from global to replicated mode: remove it first (shoal service rm app_worker)"
        ]
    );
}

#[test]
fn prune_removes_only_this_stacks_services_missing_from_the_files() {
    let loaded = load_example("app", "web-worker.yml");
    let mut existing = deployed(&loaded);
    existing.push(service("old", &labelled("app_old", Some("app"))));
    existing.push(service("theirs", &labelled("other_db", Some("other"))));
    existing.push(service("loose", &labelled("loose", None)));
    let kept = plan_deploy("app", &loaded.services, &existing, false).unwrap();
    assert!(kept.remove.is_empty());
    let pruned = plan_deploy("app", &loaded.services, &existing, true).unwrap();
    let removed: Vec<&str> = pruned.remove.iter().map(|s| s.spec.name.as_str()).collect();
    assert_eq!(removed, ["app_old"]);
}

#[test]
fn stacks_are_found_by_their_label() {
    let existing = vec![
        service("1", &labelled("b_x", Some("b"))),
        service("2", &labelled("a_y", Some("a"))),
        service("3", &labelled("a_x", Some("a"))),
        service("4", &labelled("loose", None)),
    ];
    let found = stacks(&existing);
    assert_eq!(found, [StackSummary { name: "a".into(), services: 2 }, StackSummary { name: "b".into(), services: 1 }]);
    assert_eq!(stack_table(&found), "NAME      SERVICES\na         2\nb         1\n");
    assert_eq!(stack_table(&[]), "NAME      SERVICES\n");
    let in_a: Vec<&str> = stack_services(&existing, "a").iter().map(|s| s.spec.name.as_str()).collect();
    assert_eq!(in_a, ["a_x", "a_y"]);
    assert!(stack_services(&existing, "nope").is_empty());
}

#[test]
fn bad_files_are_reported_with_their_location() {
    let dir = tempdir();
    let path = dir.join("stack.yml");
    std::fs::write(&path, "services:\n  web:\n    image: shoal/busybox:1\n    deploy:\n      replicas: three\n")
        .unwrap();
    let err = load("app", std::slice::from_ref(&path)).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with(&format!("{}:5:", path.display())), "{text}");
    assert!(text.contains("services.web.deploy.replicas"), "{text}");
    assert_eq!(err.exit_code(), 1);

    let err = load("my stack", &[examples().join("web-worker.yml")]).unwrap_err();
    assert!(err.to_string().starts_with("invalid stack name \"my stack\""), "{err}");
    let err = load("app", &[dir.join("missing.yml")]).unwrap_err();
    assert!(err.to_string().contains("missing.yml: cannot read"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory under the system's temp dir (no extra dependency for one test).
fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-cli-stack-{}-{}", std::process::id(), crate::names::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    let mut full = vec!["shoal"];
    full.extend_from_slice(args);
    Cli::parse_checked(full)
}

fn stack_command(args: &[&str]) -> StackCommand {
    match parse(args) {
        Ok(Cli { command: Command::Stack(command), .. }) => command,
        Ok(other) => panic!("parsed as {other:?}"),
        Err(e) => panic!("{args:?} refused: {}", e.render()),
    }
}

#[test]
fn deploy_takes_several_files_and_docker_flags() {
    let StackCommand::Deploy(args) =
        stack_command(&["stack", "deploy", "-c", "a.yml", "--compose-file", "b.yml", "--prune", "-d", "-q", "app"])
    else {
        panic!()
    };
    assert_eq!(args.compose_files, [PathBuf::from("a.yml"), PathBuf::from("b.yml")]);
    assert!(args.prune && args.detach && args.quiet);
    assert_eq!(args.stack, "app");
    let StackCommand::Deploy(args) = stack_command(&["stack", "up", "-c", "a.yml", "app"]) else { panic!() };
    assert!(!args.prune && !args.detach && !args.quiet);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["stack", "deploy", "app"][..],
        &["stack", "deploy", "-c", "a.yml"],
        &["stack", "rm"],
        &["stack", "ps"],
        &["stack", "services"],
        &["stack", "config"],
        &["stack", "ls", "--format", "yaml"],
    ] {
        let err = parse(args).expect_err("refused");
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
}

#[test]
fn the_other_stack_commands_parse() {
    let StackCommand::Rm(rm) = stack_command(&["stack", "rm", "a", "b"]) else { panic!() };
    assert_eq!(rm.stacks, ["a", "b"]);
    let StackCommand::Rm(_) = stack_command(&["stack", "down", "a"]) else { panic!() };
    let StackCommand::Ps(ps) = stack_command(&["stack", "ps", "--no-trunc", "--format", "json", "-q", "app"]) else {
        panic!()
    };
    assert!(ps.list.no_trunc && ps.list.quiet && ps.list.format == crate::args::ListOutput::Json);
    assert_eq!(ps.stack, "app");
    let StackCommand::Services(services) = stack_command(&["stack", "services", "-q", "app"]) else { panic!() };
    assert!(services.list.quiet);
    let StackCommand::Config(config) = stack_command(&["stack", "config", "-c", "a.yml"]) else { panic!() };
    assert_eq!(config.stack, None);
    let StackCommand::Ls(ls) = stack_command(&["stack", "ls", "--format", "json"]) else { panic!() };
    assert_eq!(ls.format, crate::args::ListOutput::Json);
}

#[test]
fn stack_ls_templates() {
    let stacks = [
        StackSummary { name: "app".to_string(), services: 2 },
        StackSummary { name: "monitoring".to_string(), services: 11 },
    ];
    let StackCommand::Ls(ls) = stack_command(&["stack", "ls", "--format", "{{.Name}}: {{.Services}}"]) else {
        panic!()
    };
    let crate::args::ListOutput::Template(template) = ls.format else { panic!("{:?}", ls.format) };
    let text = output::template_rows(&template, crate::args::format::STACK_FIELDS, &stack_rows(&stacks));
    assert_eq!(text, "app: 2\nmonitoring: 11\n");
    let StackCommand::Ls(ls) = stack_command(&["stack", "ls", "--format", r"table {{.Services}}\t{{.Name}}"]) else {
        panic!()
    };
    let crate::args::ListOutput::Template(template) = ls.format else { panic!("{:?}", ls.format) };
    let text = output::template_rows(&template, crate::args::format::STACK_FIELDS, &stack_rows(&stacks));
    assert_eq!(text, "SERVICES   NAME\n2          app\n11         monitoring\n");
    let err = Cli::parse_checked(["shoal", "stack", "ls", "--format", "{{.Replicas}}"]).unwrap_err().to_string();
    assert!(err.contains("unknown template field .Replicas (fields: .Name, .Services)"), "{err}");
}
