//! `--filter` and `--format` of the list commands: parsing, refusal and matching.

use std::collections::BTreeMap;

use shoal_types::{Node, NodeDescription, NodeRole, NodeSpec, NodeState, NodeStatus, ServiceMode};

use super::filters::*;
use super::format::*;
use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    let mut full = vec!["shoal"];
    full.extend_from_slice(args);
    Cli::parse_checked(full)
}

fn usage_error(args: &[&str], kind: clap::error::ErrorKind) -> String {
    let err = parse(args).expect_err("refused");
    assert_eq!(err.kind(), kind, "{err}");
    err.to_string()
}

#[test]
fn format_is_table_json_or_a_template() {
    assert_eq!(service_ls_format("table"), Ok(ListOutput::Table));
    assert_eq!(service_ls_format("json"), Ok(ListOutput::Json));
    assert_eq!(
        service_ls_format("{{.Name}} {{ .Replicas }}"),
        Ok(ListOutput::Template(Template {
            table: false,
            parts: vec![Part::Field("Name".into()), Part::Text(" ".into()), Part::Field("Replicas".into())],
        }))
    );
    assert_eq!(
        node_ls_format(r"table {{.Hostname}}\t{{.Status}}"),
        Ok(ListOutput::Template(Template {
            table: true,
            parts: vec![Part::Field("Hostname".into()), Part::Text("\t".into()), Part::Field("Status".into())],
        }))
    );
    assert_eq!(
        task_format("x{{.Error}}y"),
        Ok(ListOutput::Template(Template {
            table: false,
            parts: vec![Part::Text("x".into()), Part::Field("Error".into()), Part::Text("y".into())],
        }))
    );
}

#[test]
fn bad_templates_name_the_field_and_the_allowed_ones() {
    assert_eq!(
        service_ls_format("{{.Nmae}}"),
        Err("unknown template field .Nmae (fields: .ID, .Name, .Mode, .Replicas, .Image, .Ports)".to_string())
    );
    assert_eq!(
        node_ls_format("{{.Replicas}}"),
        Err(
            "unknown template field .Replicas (fields: .ID, .Hostname, .Status, .Availability, .ManagerStatus, .Address)"
                .to_string()
        )
    );
    assert!(task_format("{{json .}}").unwrap_err().starts_with("unsupported template action {{json .}}"));
    assert!(task_format("{{.Name").unwrap_err().starts_with("unclosed {{"));
    assert_eq!(
        service_ls_format("yaml"),
        Err("expected table, json or a template of {{.Field}}s such as '{{.ID}}' \
             (fields: .ID, .Name, .Mode, .Replicas, .Image, .Ports)"
            .to_string())
    );

    let text = usage_error(&["service", "ls", "--format", "{{.Nmae}}"], clap::error::ErrorKind::InvalidValue);
    assert!(text.contains("'--format <FORMAT>'"), "{text}");
    assert!(text.contains("unknown template field .Nmae (fields: .ID, .Name,"), "{text}");
    let text =
        usage_error(&["service", "ps", "--format", "{{.Replicas}}", "web"], clap::error::ErrorKind::InvalidValue);
    assert!(text.contains(".DesiredState, .CurrentState"), "{text}");
}

#[test]
fn list_commands_take_filters_and_templates() {
    let cli = parse(&["service", "ls", "-f", "name=web", "--filter", "label=tier=front", "--format", "{{.ID}}"])
        .expect("parses");
    let Command::Service(ServiceCommand::Ls(ls)) = cli.command else { panic!("{cli:?}") };
    assert_eq!(
        ls.filters,
        [ServiceFilter::Name("web".into()), ServiceFilter::Label("tier".into(), Some("front".into()))]
    );
    assert!(matches!(ls.format, ListOutput::Template(_)));

    let cli = parse(&["node", "ls", "--filter", "role=Manager", "-f", "node.label=zone"]).expect("parses");
    let Command::Node(NodeCommand::Ls(ls)) = cli.command else { panic!("{cli:?}") };
    assert_eq!(ls.filters, [NodeFilter::Role("manager".into()), NodeFilter::NodeLabel("zone".into(), None)]);
    assert_eq!(ls.format, ListOutput::Table);

    // stack services: service ls's flags.
    let cli = parse(&["stack", "services", "-f", "mode=global", "--format", "table {{.Name}}\t{{.Mode}}", "-q", "app"])
        .expect("parses");
    let Command::Stack(StackCommand::Services(services)) = cli.command else { panic!("{cli:?}") };
    assert_eq!(services.stack, "app");
    assert_eq!(services.list.filters, [ServiceFilter::Mode("global".into())]);
    assert!(services.list.quiet);
    assert!(matches!(services.list.format, ListOutput::Template(Template { table: true, .. })));
    let cli = parse(&["stack", "services", "--format", "json", "app"]).expect("parses");
    let Command::Stack(StackCommand::Services(services)) = cli.command else { panic!("{cli:?}") };
    assert_eq!((services.list.format, services.list.filters.len()), (ListOutput::Json, 0));
    let text =
        usage_error(&["stack", "services", "--filter", "node=x", "app"], clap::error::ErrorKind::ValueValidation);
    assert!(text.contains("unknown filter key \"node\" (allowed: id, label, mode, name)"), "{text}");
    let text =
        usage_error(&["stack", "services", "--format", "{{.Hostname}}", "app"], clap::error::ErrorKind::InvalidValue);
    assert!(text.contains("unknown template field .Hostname (fields: .ID, .Name, .Mode,"), "{text}");
}

#[test]
fn bad_filters_name_the_key_or_value_and_what_is_allowed() {
    assert_eq!(service_filter("nmae=web"), Err("unknown filter key \"nmae\" (allowed: id, label, mode, name)".into()));
    assert_eq!(
        service_filter("mode=batch"),
        Err("invalid mode filter \"batch\" (allowed: replicated, global, replicated-job, global-job)".into())
    );
    assert_eq!(node_filter("role=boss"), Err("invalid role filter \"boss\" (allowed: manager, worker)".into()));
    assert_eq!(
        node_filter("membership=joined"),
        Err("invalid membership filter \"joined\" (allowed: accepted, pending)".into())
    );
    assert_eq!(
        node_filter("state=ready"),
        Err("unknown filter key \"state\" (allowed: id, label, membership, name, node.label, role)".into())
    );
    assert_eq!(
        node_filter("name"),
        Err("expected KEY=VALUE with KEY one of id, label, membership, name, node.label, role".into())
    );
    assert_eq!(service_filter("name="), Err("the value of filter \"name\" must not be empty".into()));
    let text = usage_error(&["node", "ls", "--filter", "membership=joined"], clap::error::ErrorKind::ValueValidation);
    assert!(text.contains("'--filter <KEY=VALUE>'") && text.contains("allowed: accepted, pending"), "{text}");
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn service_filters_same_key_any_other_keys_all_labels_all() {
    let front = labels(&[("tier", "front"), ("team", "a")]);
    let replicated = ServiceMode::Replicated { replicas: 1 };
    let web = ServiceFacts { id: "abc123", name: "web", mode: &replicated, labels: &front };
    let f = |texts: &[&str]| -> Vec<ServiceFilter> { texts.iter().map(|t| service_filter(t).expect(t)).collect() };
    assert!(service_passes(&[], &web));
    assert!(service_passes(&f(&["name=we"]), &web), "name is a prefix");
    assert!(service_passes(&f(&["name=api", "name=web"]), &web), "same key: any");
    assert!(!service_passes(&f(&["name=web", "mode=global"]), &web), "different keys: all");
    assert!(service_passes(&f(&["id=abc", "mode=replicated"]), &web));
    assert!(service_passes(&f(&["label=tier", "label=team=a"]), &web));
    assert!(!service_passes(&f(&["label=tier=front", "label=team=b"]), &web), "labels: every one");
    assert!(!service_passes(&f(&["label=tier=back"]), &web));
}

#[test]
fn node_filters_match_hostname_role_and_both_kinds_of_label() {
    let node = Node {
        id: "n1abc".into(),
        version: 1,
        created_at: 0,
        updated_at: 0,
        spec: NodeSpec { role: NodeRole::Worker, labels: labels(&[("zone", "z1")]), ..Default::default() },
        description: NodeDescription {
            hostname: "agent-1".into(),
            engine_labels: labels(&[("disk", "ssd")]),
            ..Default::default()
        },
        status: NodeStatus { state: NodeState::Ready, message: String::new(), addr: String::new() },
        manager: None,
    };
    let f = |texts: &[&str]| -> Vec<NodeFilter> { texts.iter().map(|t| node_filter(t).expect(t)).collect() };
    assert!(node_passes(&f(&["name=agent", "role=worker", "id=n1"]), &node));
    assert!(!node_passes(&f(&["role=manager"]), &node));
    assert!(node_passes(&f(&["node.label=zone=z1", "label=disk"]), &node));
    assert!(!node_passes(&f(&["label=zone"]), &node), "label= is the engine's labels");
    assert!(node_passes(&f(&["name=m", "name=agent-1"]), &node));
    // Every node that joined is accepted; none is pending.
    assert_eq!(node_filter("membership=Accepted"), Ok(NodeFilter::Membership("accepted".into())));
    assert!(node_passes(&f(&["membership=accepted", "role=worker"]), &node));
    assert!(!node_passes(&f(&["membership=pending"]), &node));
    assert!(node_passes(&f(&["membership=pending", "membership=accepted"]), &node), "same key: any");
}
