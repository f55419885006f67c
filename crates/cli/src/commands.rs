//! Running a parsed command line against a manager.

use std::io::Write;

use clap::error::ErrorKind;
use shoal_types::{Node, Service, ServiceSummary};

use crate::args::filters::ServiceFacts;
use crate::args::{
    self, Cli, ClusterCommand, Command, CreateArgs, EventFormat, EventsArgs, InfoFormat, InspectArgs, ListArgs,
    ListOutput, NodeCommand, NodeInspectArgs, NodeLsArgs, NodePsArgs, NodeUpdateArgs, PsArgs, RollbackArgs,
    RolloutCommand, RolloutHistoryArgs, RolloutInspectArgs, RolloutStatusArgs, RolloutUndoArgs, ScaleArgs,
    ServiceCommand, StackCommand, TaskListFlags, UpdateArgs,
};
use crate::client::Client;
use crate::error::CliError;
use crate::output::{PsOptions, ServiceNames};
use crate::progress::{Deadline, Operation, wait_for_convergence, wait_for_convergence_until};
use crate::{names, output, stack, timefmt};

/// How many fresh names `service create` tries when a generated name is already taken.
const GENERATED_NAME_ATTEMPTS: usize = 3;

/// Writes to stdout; a closed pipe (`shoal service ls | head -1`) is not an error worth a panic.
pub fn print_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Writes `Error: <message>` to stderr.
pub fn print_error(error: &CliError) {
    let mut stderr = std::io::stderr().lock();
    let _ = match error {
        CliError::Usage(e) => write!(stderr, "{}", e.render()),
        CliError::Reported | CliError::ReportedExit(_) => Ok(()),
        // Not a failure of the command: the user stopped watching.
        CliError::Interrupted => writeln!(stderr, "{error}"),
        other => writeln!(stderr, "Error: {other}"),
    };
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    crate::client::use_tls_dir(cli.tls_dir.clone());
    let host = cli.host.as_str();
    match cli.command {
        Command::Service(ServiceCommand::Create(args)) => service_create(host, &args).await,
        Command::Service(ServiceCommand::Ls(args)) => service_ls(host, &args).await,
        Command::Service(ServiceCommand::Inspect(args)) => service_inspect(host, &args).await,
        Command::Service(ServiceCommand::Rm(args)) => service_rm(host, &args.services).await,
        Command::Service(ServiceCommand::Ps(args)) => service_ps(host, &args).await,
        Command::Service(ServiceCommand::Logs(args)) => service_logs(host, &args).await,
        Command::Service(ServiceCommand::Scale(args)) => service_scale(host, &args).await,
        Command::Service(ServiceCommand::Update(args)) => service_update(host, &args).await,
        Command::Service(ServiceCommand::Rollback(args)) => service_rollback(host, &args).await,
        Command::Rollout(RolloutCommand::History(args)) => rollout_history(host, &args).await,
        Command::Rollout(RolloutCommand::Pause(args)) => {
            let mut client = Client::connect(host).await?;
            client.control_rollout(&args.service, shoal_proto::v1::RolloutOp::Pause).await?;
            print_out(&format!("{}: rollout paused\n", args.service));
            Ok(())
        }
        Command::Rollout(RolloutCommand::Approve(args)) => {
            let mut client = Client::connect(host).await?;
            // The step as it waits now: once approved, the updater moves on and rewrites the
            // status message at once, so the answer cannot say which step was approved.
            let before = client.get_service(&args.service).await?;
            client.control_rollout(&args.service, shoal_proto::v1::RolloutOp::Approve).await?;
            let step = before.update_status.and_then(|s| s.step);
            let approved = step.map_or_else(|| "step".to_string(), |s| format!("step {}/{}", s.index + 1, s.count));
            print_out(&format!("{}: {approved} approved\n", args.service));
            Ok(())
        }
        Command::Rollout(RolloutCommand::Finish(args)) => {
            let mut client = Client::connect(host).await?;
            client.control_rollout(&args.service, shoal_proto::v1::RolloutOp::Finish).await?;
            print_out(&format!("{}: kept old tasks stopping\n", args.service));
            Ok(())
        }
        Command::Rollout(RolloutCommand::Abort(args)) => rollout_abort(host, &args).await,
        Command::Rollout(RolloutCommand::Status(args)) => rollout_status(host, &args).await,
        Command::Rollout(RolloutCommand::Ls(args)) => {
            let mut client = Client::connect(host).await?;
            let rollouts = client.list_rollouts(args.service.as_deref().unwrap_or("")).await?;
            match args.format {
                InfoFormat::Json => print_out(&output::json_array(&rollouts)),
                InfoFormat::Text => {
                    print_out(&output::rollout_table(&rollouts, timefmt::now_millis()));
                    // Every stack rollout (atomic deploys, stack rollbacks) and its members.
                    let groups =
                        if args.service.is_none() { client.list_stack_revisions("").await? } else { Vec::new() };
                    if !groups.is_empty() {
                        print_out(&format!("\n{}", output::group_table(&groups, timefmt::now_millis())));
                    }
                }
            }
            Ok(())
        }
        Command::Rollout(RolloutCommand::Inspect(args)) => rollout_inspect(host, &args).await,
        Command::Rollout(RolloutCommand::Resume(args)) => {
            let mut client = Client::connect(host).await?;
            client.control_rollout(&args.service, shoal_proto::v1::RolloutOp::Resume).await?;
            print_out(&format!("{}: rollout resumed\n", args.service));
            Ok(())
        }
        Command::Rollout(RolloutCommand::Undo(args)) => {
            let to = Rollback {
                to_revision: args.to_revision,
                cause: change_cause(&args.change_cause),
                rollout_id: args.rollout_id.clone(),
            };
            rollback(host, &args.service, to, args.detach, args.quiet, None).await
        }
        Command::Node(NodeCommand::Ls(args)) => node_ls(host, &args).await,
        Command::Node(NodeCommand::Inspect(args)) => node_inspect(host, &args).await,
        Command::Node(NodeCommand::Demote(args)) => node_demote(host, &args.nodes).await,
        Command::Node(NodeCommand::Rm(args)) => node_rm(host, &args.nodes, args.force).await,
        Command::Node(NodeCommand::Update(args)) => node_update(host, &args).await,
        Command::Node(NodeCommand::Ps(args)) => node_ps(host, &args).await,
        Command::Cluster(ClusterCommand::Info(args)) => cluster_info(host, args.format, args.local).await,
        Command::Cluster(ClusterCommand::JoinToken(args)) => join_token(host, &args).await,
        Command::Cluster(ClusterCommand::UnlockKey(args)) => {
            let mut client = Client::connect(host).await?;
            let key = client.unlock_key().await?;
            if args.quiet {
                print_out(&format!("{key}\n"));
            } else {
                print_out(&format!(
                    "To start an autolocked manager, run it with this key:\n\n    shoal-manager --unlock-key {key} ...\n\n(or SHOAL_UNLOCK_KEY in its environment)\n"
                ));
            }
            Ok(())
        }
        Command::Cluster(ClusterCommand::Update(args)) => {
            let mut client = Client::connect(host).await?;
            client.update_cluster(&args).await?;
            print_out("Cluster updated.\n");
            Ok(())
        }
        Command::Events(args) => events(host, &args).await,
        Command::Secret(command) => data(host, shoal_types::DataKind::Secret, command).await,
        Command::Route(command) => route(host, command).await,
        Command::Config(command) => data(host, shoal_types::DataKind::Config, command).await,
        Command::Network(command) => network(host, command).await,
        Command::Stack(StackCommand::Deploy(args)) => stack::deploy(host, &args).await,
        Command::Stack(StackCommand::Ls(args)) => stack::ls(host, &args).await,
        Command::Stack(StackCommand::Services(args)) => stack::services(host, &args).await,
        Command::Stack(StackCommand::Ps(args)) => stack::ps(host, &args).await,
        Command::Stack(StackCommand::Rm(args)) => stack::rm(host, &args.stacks).await,
        Command::Stack(StackCommand::Config(args)) => stack::config(&args),
        Command::Stack(StackCommand::History(args)) => stack::history(host, &args).await,
        Command::Stack(StackCommand::Rollback(args)) => stack::rollback(host, &args).await,
        Command::Completion(args) => {
            print_out(&crate::generate::completion(args.shell));
            Ok(())
        }
        Command::Man(args) => {
            let pages = crate::generate::man_pages(&args.dir)?;
            print_out(&format!("Wrote {} man pages to {}\n", pages.len(), args.dir.display()));
            Ok(())
        }
    }
}

async fn service_create(host: &str, args: &CreateArgs) -> Result<(), CliError> {
    let mut spec = args.to_spec().map_err(|message| {
        CliError::Usage(args::usage_error(&["service", "create"], ErrorKind::ArgumentConflict, message))
    })?;
    spec.validate().map_err(|e| CliError::Message(e.to_string()))?;
    let mut client = Client::connect(host).await?;
    client.set_change_cause(change_cause(&args.change_cause));
    let mut attempts = 1;
    loop {
        match client.create_service(&spec).await {
            Ok(service) => {
                print_out(&format!("{}\n", service.id));
                if !args.detach {
                    let deadline = Deadline::after(args.wait.timeout);
                    wait_for_convergence_until(host, &service, Operation::Create, args.quiet, deadline).await?;
                }
                return Ok(());
            }
            Err(e)
                if e.code() == Some(tonic::Code::AlreadyExists)
                    && args.name.is_none()
                    && attempts < GENERATED_NAME_ATTEMPTS =>
            {
                attempts += 1;
                spec.name = names::generate();
            }
            Err(e) => return Err(e),
        }
    }
}

async fn service_ls(host: &str, args: &ListArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    service_list(&mut client, args).await?.print(args);
    Ok(())
}

/// What `service ls` and `stack services` list: whole services for `--format json`, otherwise
/// the manager's summaries (the table needs neither whole specs nor the cluster's tasks).
pub enum ServiceList {
    Services(Vec<Service>),
    Summaries(Vec<ServiceSummary>),
}

/// The services that pass `args.filters`, in the form `args` prints them in.
pub async fn service_list(client: &mut Client, args: &ListArgs) -> Result<ServiceList, CliError> {
    if args.format.is_json() && !args.quiet {
        let mut services = client.list_services().await?;
        services.retain(|s| {
            let facts = ServiceFacts { id: &s.id, name: &s.spec.name, mode: &s.spec.mode, labels: &s.spec.labels };
            args::filters::service_passes(&args.filters, &facts)
        });
        return Ok(ServiceList::Services(services));
    }
    let mut summaries = client.list_service_summaries().await?;
    summaries.retain(|s| {
        let facts = ServiceFacts { id: &s.id, name: &s.name, mode: &s.mode, labels: &s.labels };
        args::filters::service_passes(&args.filters, &facts)
    });
    Ok(ServiceList::Summaries(summaries))
}

impl ServiceList {
    pub fn is_empty(&self) -> bool {
        match self {
            ServiceList::Services(services) => services.is_empty(),
            ServiceList::Summaries(summaries) => summaries.is_empty(),
        }
    }

    /// Prints the list as `args` asks: ids (`-q`), a JSON array, a template, or the table.
    pub fn print(&self, args: &ListArgs) {
        match self {
            ServiceList::Services(services) => print_out(&output::json_array(&output::sort_services(services))),
            ServiceList::Summaries(summaries) if args.quiet => print_out(&output::service_ids(summaries)),
            ServiceList::Summaries(summaries) => match &args.format {
                ListOutput::Template(template) => print_out(&output::template_rows(
                    template,
                    args::format::SERVICE_FIELDS,
                    &output::service_rows(summaries),
                )),
                _ => print_out(&output::service_table(summaries)),
            },
        }
    }
}

async fn service_inspect(host: &str, args: &InspectArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let mut found = Vec::new();
    let mut failed = false;
    for name in &args.services {
        match client.get_service(name).await {
            Ok(service) => found.push(service),
            Err(e) => {
                print_error(&e);
                failed = true;
            }
        }
    }
    if args.pretty {
        let text: Vec<String> = found.iter().map(output::service_pretty).collect();
        print_out(&text.join("\n"));
    } else {
        print_out(&output::json_array(&found));
    }
    if failed { Err(CliError::Reported) } else { Ok(()) }
}

async fn service_rm(host: &str, services: &[String]) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    each_reported(services, async |name| client.remove_service(name).await.map(|_| name.to_string())).await
}

/// Runs `each` for every name in turn, printing the line it returns or its error; a failure
/// does not stop the others, and makes the command exit 1 (docker's `rm` of several objects).
async fn each_reported(
    names: &[String],
    mut each: impl AsyncFnMut(&str) -> Result<String, CliError>,
) -> Result<(), CliError> {
    let mut failed = false;
    for name in names {
        match each(name).await {
            Ok(line) => print_out(&format!("{line}\n")),
            Err(e) => {
                print_error(&e);
                failed = true;
            }
        }
    }
    if failed { Err(CliError::Reported) } else { Ok(()) }
}

async fn node_ls(host: &str, args: &NodeLsArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let mut nodes = client.list_nodes().await?;
    nodes.retain(|n| args::filters::node_passes(&args.filters, n));
    if args.quiet {
        print_out(&output::node_ids(&nodes));
    } else if let ListOutput::Template(template) = &args.format {
        print_out(&output::template_rows(template, args::format::NODE_FIELDS, &output::node_rows(&nodes)));
    } else if args.format.is_json() {
        let sorted: Vec<&Node> = output::sort_nodes(&nodes);
        print_out(&output::json_array(&sorted));
    } else {
        print_out(&output::node_table(&nodes));
    }
    Ok(())
}

async fn node_inspect(host: &str, args: &NodeInspectArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let mut found = Vec::new();
    let mut failed = false;
    for name in &args.nodes {
        match client.get_node(name).await {
            Ok(node) => found.push(node),
            Err(e) => {
                print_error(&e);
                failed = true;
            }
        }
    }
    if args.pretty {
        let text: Vec<String> = found.iter().map(output::node_pretty).collect();
        print_out(&text.join("\n"));
    } else {
        print_out(&output::json_array(&found));
    }
    if failed { Err(CliError::Reported) } else { Ok(()) }
}

async fn node_demote(host: &str, nodes: &[String]) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let mut failed = false;
    for name in nodes {
        match client.demote_node(name).await {
            Ok(node) => print_out(&format!("Manager {} demoted.\n", node.id)),
            Err(e) => {
                print_error(&e);
                failed = true;
            }
        }
    }
    if failed { Err(CliError::Reported) } else { Ok(()) }
}

async fn node_rm(host: &str, nodes: &[String], force: bool) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    each_reported(nodes, async |name| client.remove_node(name, force).await).await
}

async fn cluster_info(host: &str, format: InfoFormat, local: bool) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let info = client.cluster_info(local).await?;
    match format {
        InfoFormat::Json => print_out(&output::json_object(&info)),
        InfoFormat::Text => print_out(&output::cluster_info_text(&info)),
    }
    Ok(())
}

async fn join_token(host: &str, args: &args::JoinTokenArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let token = client.join_token(args.role.as_str(), args.rotate).await?;
    if args.quiet {
        print_out(&format!("{token}\n"));
        return Ok(());
    }
    let mut text = String::new();
    if args.rotate {
        text.push_str(&format!("Successfully rotated {} join token.\n\n", args.role.as_str()));
    }
    let addr = client.addr().trim_start_matches("http://").trim_start_matches("https://");
    let command = match args.role {
        args::JoinRole::Worker => format!("shoal-agent --data-dir DIR --join {addr} --token {token}"),
        args::JoinRole::Manager => {
            format!(
                "shoal-manager --data-dir DIR --listen-addr ADDR --advertise-addr ADDR --join {addr} --token {token}"
            )
        }
    };
    text.push_str(&format!(
        "To add a {} to this cluster, run the following command on it:\n\n    {command}\n\n",
        args.role.as_str()
    ));
    print_out(&text);
    Ok(())
}

/// Prints the tasks `ps` selected, as `flags` ask.
fn print_tasks(tasks: &[shoal_types::Task], flags: &TaskListFlags, names: &ServiceNames, nodes: &[Node]) {
    let selected = output::select_tasks(tasks, &flags.filters, names, nodes);
    if flags.quiet {
        print_out(&output::task_ids(&selected, flags.no_trunc));
    } else if flags.format.is_json() {
        print_out(&output::json_array(&selected));
    } else {
        let options = PsOptions { no_trunc: flags.no_trunc, no_resolve: flags.no_resolve, now: timefmt::now_millis() };
        match &flags.format {
            ListOutput::Template(template) => {
                let rows = output::task_rows(&selected, names, nodes, &options);
                print_out(&output::template_rows(template, args::format::TASK_FIELDS, &rows));
            }
            _ => print_out(&output::task_table(&selected, names, nodes, &options)),
        }
    }
}

async fn service_ps(host: &str, args: &PsArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let mut services: Vec<Service> = Vec::new();
    let mut failed = false;
    for name in &args.services {
        match client.get_service(name).await {
            Ok(service) if services.iter().any(|s| s.id == service.id) => {}
            Ok(service) => services.push(service),
            Err(e) => {
                print_error(&e);
                failed = true;
            }
        }
    }
    if !services.is_empty() {
        print_service_tasks(&mut client, &services.iter().collect::<Vec<_>>(), &args.list).await?;
    }
    if failed { Err(CliError::Reported) } else { Ok(()) }
}

/// Prints the tasks of `services` as `service ps` and `stack ps` do.
pub(crate) async fn print_service_tasks(
    client: &mut Client,
    services: &[&Service],
    flags: &TaskListFlags,
) -> Result<(), CliError> {
    let mut tasks = Vec::new();
    for service in services {
        tasks.extend(client.list_tasks(&service.id, "").await?);
    }
    let names: ServiceNames = services.iter().map(|s| (s.id.clone(), s.spec.name.clone())).collect();
    // Only used for hostnames and node filters; ids are shown without them.
    let nodes = client.list_nodes().await.unwrap_or_default();
    print_tasks(&tasks, flags, &names, &nodes);
    Ok(())
}

async fn node_ps(host: &str, args: &NodePsArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let mut found: Vec<Node> = Vec::new();
    let mut failed = false;
    for name in &args.nodes {
        match client.get_node(name).await {
            Ok(node) if found.iter().any(|n| n.id == node.id) => {}
            Ok(node) => found.push(node),
            Err(e) => {
                print_error(&e);
                failed = true;
            }
        }
    }
    if !found.is_empty() {
        let mut tasks = Vec::new();
        for node in &found {
            tasks.extend(client.list_tasks("", &node.id).await?);
        }
        let names: ServiceNames =
            client.list_services().await.unwrap_or_default().into_iter().map(|s| (s.id, s.spec.name)).collect();
        let nodes = client.list_nodes().await.unwrap_or(found);
        print_tasks(&tasks, &args.list, &names, &nodes);
    }
    if failed { Err(CliError::Reported) } else { Ok(()) }
}

/// Sets the replicas of one service; refuses global services.
async fn scale_one(client: &mut Client, name: &str, replicas: u64) -> Result<Service, CliError> {
    let service = client.get_service(name).await?;
    let mut spec = service.spec.clone();
    match &mut spec.mode {
        shoal_types::ServiceMode::Replicated { replicas: current }
        | shoal_types::ServiceMode::ReplicatedJob { total_completions: current, .. } => *current = replicas,
        shoal_types::ServiceMode::Global | shoal_types::ServiceMode::GlobalJob => {
            return Err(CliError::Message(format!(
                "{name}: scale can only be used with replicated or replicated-job mode"
            )));
        }
    }
    client.update_service(&service.id, service.version, &spec).await
}

async fn service_scale(host: &str, args: &ScaleArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    client.set_change_cause(change_cause(&args.change_cause));
    let mut scaled = Vec::new();
    let mut failed = false;
    for (name, replicas) in &args.scales {
        match scale_one(&mut client, name, *replicas).await {
            Ok(service) => {
                print_out(&format!("{name} scaled to {replicas}\n"));
                scaled.push(service);
            }
            Err(e) => {
                print_error(&e);
                failed = true;
            }
        }
    }
    if !args.detach {
        for service in &scaled {
            wait_for_convergence(host, service, Operation::Scale, false).await?;
        }
    }
    if failed { Err(CliError::Reported) } else { Ok(()) }
}

async fn service_update(host: &str, args: &UpdateArgs) -> Result<(), CliError> {
    if args.rollback {
        args.check_usage().map_err(|message| {
            CliError::Usage(args::usage_error(&["service", "update"], ErrorKind::ArgumentConflict, message))
        })?;
        let to = Rollback {
            to_revision: None,
            cause: change_cause(&args.change_cause),
            rollout_id: args.rollout_id.clone(),
        };
        return rollback(host, &args.service, to, args.detach, args.quiet, Deadline::after(args.wait.timeout)).await;
    }
    let mut client = Client::connect(host).await?;
    client.set_change_cause(change_cause(&args.change_cause));
    client.set_rollout_id(args.rollout_id.clone());
    let service = client.get_service(&args.service).await?;
    let mut spec = service.spec.clone();
    args.apply(&mut spec).map_err(CliError::Message)?;
    spec.validate().map_err(|e| CliError::Message(e.to_string()))?;
    if args.dry_run {
        let mut plan = client.plan_update(&service.id, &spec).await?;
        let pretty = |spec: &shoal_types::ServiceSpec| serde_json::to_string_pretty(spec).unwrap_or_default();
        plan.spec_changes = output::line_diff(&pretty(&service.spec), &pretty(&spec));
        match args.plan_format.unwrap_or_default() {
            InfoFormat::Json => print_out(&output::json_object(&plan)),
            InfoFormat::Text => print_out(&output::update_plan(&plan)),
        }
        return Ok(());
    }
    let updated = client.update_service(&service.id, service.version, &spec).await?;
    print_out(&format!("{}\n", args.service));
    if !args.detach {
        let deadline = Deadline::after(args.wait.timeout);
        wait_for_convergence_until(host, &updated, Operation::Update, args.quiet, deadline).await?;
    }
    Ok(())
}

async fn service_rollback(host: &str, args: &RollbackArgs) -> Result<(), CliError> {
    let to = Rollback {
        to_revision: args.to_revision,
        cause: change_cause(&args.change_cause),
        rollout_id: args.rollout_id.clone(),
    };
    rollback(host, &args.service, to, args.detach, args.quiet, None).await
}

/// `rollout history`: the kept revisions as a table (or JSON), or one revision in full with
/// what changed from the one before it.
async fn rollout_history(host: &str, args: &RolloutHistoryArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let revisions = client.list_revisions(&args.service).await?;
    let Some(number) = args.revision else {
        match args.format {
            InfoFormat::Json => print_out(&output::json_array(&revisions)),
            InfoFormat::Text => print_out(&output::revision_table(&revisions, timefmt::now_millis())),
        }
        return Ok(());
    };
    let Some(at) = revisions.iter().position(|r| r.number == number) else {
        let kept = match (revisions.first(), revisions.last()) {
            (Some(first), Some(last)) => format!("{}-{}", first.number, last.number),
            _ => "none".into(),
        };
        return Err(CliError::Message(format!(
            "revision {number} not found for service {} (kept: {kept})",
            args.service
        )));
    };
    let revision = &revisions[at];
    match args.format {
        InfoFormat::Json => print_out(&output::json_object(revision)),
        InfoFormat::Text => {
            let before = at.checked_sub(1).map(|i| &*revisions[i].spec);
            print_out(&output::revision_detail(revision, before));
        }
    }
    Ok(())
}

/// `rollout inspect`: a rollout id (any service's), else a service's newest rollout; the text
/// view joins the tasks the store still holds to the record's slots.
async fn rollout_inspect(host: &str, args: &RolloutInspectArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let all = client.list_rollouts("").await?;
    let found = match all.iter().find(|r| r.id == args.target) {
        Some(rollout) => rollout.clone(),
        None => {
            let service = client.get_service(&args.target).await?;
            let mine = client.list_rollouts(&service.id).await?;
            mine.into_iter().last().ok_or_else(|| {
                CliError::Message(format!("service {} has no rollout yet (no update has run)", service.spec.name))
            })?
        }
    };
    if let Some(path) = &args.svg {
        std::fs::write(path, shoal_chart::rollout_svg(&found, timefmt::now_millis()))
            .map_err(|e| CliError::Message(format!("--svg {}: {e}", path.display())))?;
        eprintln!("wrote the timeline of rollout {} to {}", found.id, path.display());
    }
    match args.format {
        InfoFormat::Json => print_out(&output::json_object(&found)),
        InfoFormat::Text => {
            let tasks = client.list_tasks(&found.service_id, "").await.unwrap_or_default();
            print_out(&output::rollout_detail(&found, &tasks));
        }
    }
    Ok(())
}

/// `rollout status`: follows the service's update or rollback with `service update`'s progress
/// display and exit codes; one that already ended is reported at once (0 when it completed).
async fn rollout_status(host: &str, args: &RolloutStatusArgs) -> Result<(), CliError> {
    use shoal_types::UpdateState;
    let mut client = Client::connect(host).await?;
    let service = match client.get_service(&args.service).await {
        Ok(service) => service,
        // Not a service: a stack's rollout, if it has one.
        Err(e) => match stack::group_status(host, &args.service, args.quiet).await? {
            Some(()) => return Ok(()),
            None => return Err(e),
        },
    };
    let rollback = service.update_status.as_ref().is_some_and(|s| {
        matches!(s.state, UpdateState::RollbackStarted | UpdateState::RollbackPaused | UpdateState::RollbackCompleted)
    });
    let operation = if rollback { Operation::Rollback } else { Operation::Update };
    wait_for_convergence_until(host, &service, operation, args.quiet, Deadline::after(args.timeout)).await
}

/// `rollout abort`: the update stops and the service rolls back to the spec before it; waits for
/// the rollback like `service rollback` unless `-d`.
async fn rollout_abort(host: &str, args: &RolloutUndoArgs) -> Result<(), CliError> {
    if args.to_revision.is_some() {
        return Err(CliError::Usage(args::usage_error(
            &["rollout", "abort"],
            ErrorKind::ArgumentConflict,
            "--to-revision cannot be used with abort: an abort returns to the spec before the update",
        )));
    }
    let mut client = Client::connect(host).await?;
    client.set_change_cause(change_cause(&args.change_cause));
    client.set_rollout_id(args.rollout_id.clone());
    let service = client.control_rollout(&args.service, shoal_proto::v1::RolloutOp::Abort).await?;
    print_out(&format!("{}\n", args.service));
    if !args.detach {
        wait_for_convergence_until(host, &service, Operation::Rollback, args.quiet, None).await?;
    }
    Ok(())
}

/// `--change-cause`, or else the command line as it was typed (what `kubectl --record` kept),
/// cut to the limit a manager accepts.
pub fn change_cause(flag: &Option<String>) -> String {
    if let Some(cause) = flag {
        return cause.clone();
    }
    let mut line = std::env::args().collect::<Vec<_>>().join(" ");
    let most = shoal_types::limits::MAX_CHANGE_CAUSE_BYTES;
    if line.len() > most {
        let mut end = most;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

/// Where a rollback goes (the previous spec, or a kept revision), why, and its rollout's id.
pub struct Rollback {
    pub to_revision: Option<u64>,
    pub cause: String,
    pub rollout_id: Option<String>,
}

/// `service rollback`, `service update --rollback` and `rollout undo`: the previous spec, or the
/// spec of a kept revision, becomes current again.
async fn rollback(
    host: &str,
    name: &str,
    to: Rollback,
    detach: bool,
    quiet: bool,
    deadline: Option<Deadline>,
) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    client.set_change_cause(to.cause);
    client.set_rollout_id(to.rollout_id);
    let service = client.get_service(name).await?;
    let updated = client.rollback_service(&service.id, service.version, to.to_revision).await?;
    print_out(&format!("{name}\n"));
    if !detach {
        wait_for_convergence_until(host, &updated, Operation::Rollback, quiet, deadline).await?;
    }
    Ok(())
}

async fn node_update(host: &str, args: &NodeUpdateArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let node = client.get_node(&args.node).await?;
    let mut spec = node.spec.clone();
    args.apply(&mut spec).map_err(CliError::Message)?;
    client.update_node(&node.id, node.version, &spec).await?;
    // docker prints the node as it was named on the command line.
    print_out(&format!("{}\n", args.node));
    Ok(())
}

/// Writes one line and flushes it; an error means nobody reads any more (closed pipe).
fn write_line(line: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes())?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

/// How long `events` keeps looking for a manager after its stream broke: long enough for an
/// election and a restarted manager, short enough that a cluster that is gone ends the command.
const EVENTS_RECONNECT_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// A stream that ended this way broke with its connection or its manager (killed, stopped,
/// cut off); refusals (a bad filter, a missing service, too slow a reader) end `events`.
/// `shoal secret|config create|ls|inspect|rm`.
async fn data(host: &str, kind: shoal_types::DataKind, command: args::data::DataCommand) -> Result<(), CliError> {
    use args::data::DataCommand;
    match command {
        DataCommand::Create(args) => {
            let data = read_value(kind, &args.file)?;
            let labels = args.labels.into_iter().collect();
            let spec = shoal_types::DataSpec { name: args.name, labels, data };
            let mut client = Client::connect(host).await?;
            let object = client.create_data(kind, &spec).await?;
            print_out(&format!("{}\n", object.id));
            Ok(())
        }
        DataCommand::Ls(args) => {
            let mut client = Client::connect(host).await?;
            let objects = client.list_data(kind).await?;
            if args.quiet {
                print_out(&objects.iter().map(|o| format!("{}\n", o.id)).collect::<String>());
            } else if args.format == args::InfoFormat::Json {
                print_out(&output::json_array(&objects));
            } else {
                print_out(&output::data_table(&objects, timefmt::now_millis()));
            }
            Ok(())
        }
        DataCommand::Inspect(args) => {
            let mut client = Client::connect(host).await?;
            let mut found = Vec::new();
            let mut failed = false;
            for name in &args.names {
                match client.get_data(kind, name).await {
                    Ok(object) => found.push(object),
                    Err(e) => {
                        print_error(&e);
                        failed = true;
                    }
                }
            }
            if args.pretty {
                print_out(&found.iter().map(output::data_pretty).collect::<Vec<_>>().join("\n"));
            } else {
                print_out(&output::json_array(&found));
            }
            if failed { Err(CliError::Reported) } else { Ok(()) }
        }
        DataCommand::Rm(args) => {
            let mut client = Client::connect(host).await?;
            each_reported(&args.names, async |name| client.remove_data(kind, name).await.map(|_| name.to_string()))
                .await
        }
    }
}

/// `shoal network …`: networks are kept as objects of kind network with no value, so `ls`,
/// `inspect` and `rm` are the secret and config commands.
async fn network(host: &str, command: args::data::NetworkCommand) -> Result<(), CliError> {
    use args::data::{DataCommand, NetworkCommand};
    let kind = shoal_types::DataKind::Network;
    match command {
        NetworkCommand::Create(args) => {
            let labels = args.labels.into_iter().collect();
            let spec = shoal_types::DataSpec { name: args.name, labels, data: Vec::new() };
            let mut client = Client::connect(host).await?;
            let object = client.create_data(kind, &spec).await?;
            print_out(&format!("{}\n", object.id));
            Ok(())
        }
        NetworkCommand::Ls(args) => data(host, kind, DataCommand::Ls(args)).await,
        NetworkCommand::Inspect(args) => data(host, kind, DataCommand::Inspect(args)).await,
        NetworkCommand::Rm(args) => data(host, kind, DataCommand::Rm(args)).await,
    }
}

async fn route(host: &str, command: args::route::RouteCommand) -> Result<(), CliError> {
    use args::route::RouteCommand;
    let warn = |warnings: &[String]| {
        let mut stderr = std::io::stderr().lock();
        for warning in warnings {
            let _ = writeln!(stderr, "warning: {warning}");
        }
    };
    match command {
        RouteCommand::Create(args) => {
            let spec = shoal_types::traffic::RouteSpec {
                name: args.name,
                labels: args.labels.into_iter().collect(),
                port: args.publish.0,
                target: args.publish.1,
                selector: args.select.into_iter().collect(),
                weights: args.weights.into_iter().collect(),
            };
            spec.validate().map_err(|e| CliError::Message(format!("route {}: {e}", spec.name)))?;
            let mut client = Client::connect(host).await?;
            let (route, warnings) = client.create_route(&spec).await?;
            warn(&warnings);
            print_out(&format!("{}\n", route.id));
            Ok(())
        }
        RouteCommand::Update(args) => {
            let mut client = Client::connect(host).await?;
            let current = find_route(&mut client, &args.name).await?;
            let mut spec = current.spec.clone();
            if let Some((port, target)) = args.publish {
                spec.port = port;
                spec.target = target;
            }
            if !args.select.is_empty() {
                spec.selector = args.select.into_iter().collect();
            }
            for name in &args.weights_rm {
                spec.weights.remove(name);
            }
            spec.weights.extend(args.weights);
            spec.validate().map_err(|e| CliError::Message(format!("route {}: {e}", spec.name)))?;
            let (route, warnings) = client.update_route(&current.id, current.version, &spec).await?;
            warn(&warnings);
            print_out(&format!("{}\n", route.spec.name));
            Ok(())
        }
        RouteCommand::Ls(args) => {
            let mut client = Client::connect(host).await?;
            let routes = client.list_routes().await?;
            if args.quiet {
                print_out(&routes.iter().map(|r| format!("{}\n", r.id)).collect::<String>());
            } else if args.format == args::InfoFormat::Json {
                print_out(&output::json_array(&routes));
            } else {
                print_out(&output::route_table(&routes));
            }
            Ok(())
        }
        RouteCommand::Inspect(args) => {
            let mut client = Client::connect(host).await?;
            let mut found = Vec::new();
            let mut failed = false;
            for name in &args.names {
                match find_route(&mut client, name).await {
                    Ok(route) => found.push(route),
                    Err(e) => {
                        print_error(&e);
                        failed = true;
                    }
                }
            }
            print_out(&output::json_array(&found));
            if failed { Err(CliError::Reported) } else { Ok(()) }
        }
        RouteCommand::Rm(args) => {
            let mut client = Client::connect(host).await?;
            each_reported(&args.names, async |name| client.remove_route(name).await.map(|_| name.to_string())).await
        }
    }
}

/// The route named `reference` (its name, id or a unique id prefix).
async fn find_route(client: &mut Client, reference: &str) -> Result<shoal_types::traffic::Route, CliError> {
    let routes = client.list_routes().await?;
    if let Some(route) = routes.iter().find(|r| r.spec.name == reference || r.id == reference) {
        return Ok(route.clone());
    }
    let matching: Vec<&shoal_types::traffic::Route> = routes.iter().filter(|r| r.id.starts_with(reference)).collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(CliError::Message(format!("route {reference} not found"))),
        _ => Err(CliError::Message(format!(
            "route {reference} is ambiguous: {} routes' ids start with it",
            matching.len()
        ))),
    }
}

/// A secret's or config's value from `file`, or standard input for `-`; at most Swarm's 500 KiB.
pub(crate) fn read_value(kind: shoal_types::DataKind, file: &str) -> Result<Vec<u8>, CliError> {
    use std::io::Read;
    let most = shoal_types::secret::MAX_DATA_BYTES;
    let mut data = Vec::new();
    // One byte more than allowed is enough to refuse, whatever the file's size.
    let limit = u64::try_from(most).unwrap_or(u64::MAX) + 1;
    let read = if file == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut data)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut data))
    };
    read.map_err(|e| CliError::Message(format!("{kind} file {file}: {e}")))?;
    if data.is_empty() {
        return Err(CliError::Message(format!("{kind} file {file} is empty; a {kind} holds 1 to {most} bytes")));
    }
    if data.len() > most {
        return Err(CliError::Message(format!(
            "{kind} file {file} is larger than {most} bytes (500 KiB, Swarm's limit for a {kind})"
        )));
    }
    Ok(data)
}

/// `service logs`: prints lines as the leader passes them on, standard output and standard
/// error apart as the containers wrote them; warnings (an agent that is down) go to standard
/// error. With `-f` it runs until interrupted.
async fn service_logs(host: &str, args: &args::LogsArgs) -> Result<(), CliError> {
    let mut client = Client::connect_streaming(host).await?;
    let request = shoal_proto::v1::ServiceLogsRequest {
        reference: args.service.clone(),
        follow: args.follow,
        tail: args.tail.to_request(),
        since_unix_nanos: args.since.unwrap_or(0),
    };
    let mut stream = client.service_logs(request.clone()).await?;
    // Where each task's lines got to, so a read broken off can be taken up again without a line
    // twice or missing: its last line's time and how many lines it printed at that time.
    let mut printed = LogPositions::default();
    let format = output::logs::LogFormat {
        timestamps: args.timestamps,
        raw: args.raw,
        no_task_ids: args.no_task_ids,
        no_trunc: args.no_trunc,
    };
    let mut tasks = output::logs::LogTasks::default();
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Reads taken up again in a row with nothing read in between: a failure that is not the
    // connection's ends the command after a few.
    let mut fruitless = 0;
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = &mut interrupted => return Ok(()),
        };
        let message = match message {
            Ok(Some(message)) => {
                fruitless = 0;
                message
            }
            Ok(None) => return Ok(()),
            Err(status) if stream_broken(&status) && fruitless >= LOG_RESUMES_IN_A_ROW => {
                return Err(CliError::from(status));
            }
            // The connection broke (a manager restarted, a connection reset): read again, through
            // any manager, from where each task's lines got to.
            Err(status) if stream_broken(&status) => {
                fruitless += 1;
                let why = crate::error::error_chain(&status);
                let code = status.code();
                let _ = write_async(
                    &mut stderr,
                    format!("warning: the log read broke off ({code:?}: {why}); reading on\n").as_bytes(),
                )
                .await;
                let from = client.addr().to_string();
                let resumed = printed.resume(&request);
                let deadline = tokio::time::Instant::now() + EVENTS_RECONNECT_FOR;
                loop {
                    let attempt = async {
                        let mut again = Client::reconnect_streaming(host, &from).await?;
                        let stream = again.service_logs(resumed.clone()).await?;
                        Ok::<_, CliError>((again, stream))
                    };
                    match attempt.await {
                        Ok((again, reopened)) => {
                            (client, stream) = (again, reopened);
                            break;
                        }
                        Err(e) if tokio::time::Instant::now() < deadline && worth_retrying(&e) => {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            Err(status) => return Err(CliError::from(status)),
        };
        tasks.learn(message.tasks);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for warning in &message.warnings {
            err.extend_from_slice(format!("warning: {warning}\n").as_bytes());
        }
        for line in &message.lines {
            if !printed.first_time(line) {
                continue;
            }
            let text = tasks.format(line, format);
            if line.stream == shoal_proto::v1::LogStream::Stderr as i32 { err.extend(text) } else { out.extend(text) }
        }
        // Written without blocking the runtime: a reader that pauses (`| less`) must not stop
        // the connection answering the manager's pings, or the manager drops it. A closed pipe
        // (`| head`) ends the command quietly.
        if !out.is_empty() && write_async(&mut stdout, &out).await.is_err() {
            return Ok(());
        }
        if !err.is_empty() {
            let _ = write_async(&mut stderr, &err).await;
        }
    }
}

/// Per task, the time of the last line printed, how many were printed at that time (lines can
/// share a time), and after a read is taken up again, how many of those are still to be skipped.
#[derive(Default)]
struct LogPositions(std::collections::HashMap<String, LogPosition>);

#[derive(Clone, Copy)]
struct LogPosition {
    last: i64,
    at_last: u64,
    /// Set while a read taken up again repeats this task's lines: the lines at `last` it has
    /// still to skip (every earlier one is skipped too).
    replaying: Option<u64>,
}

impl LogPositions {
    /// Whether `line` is to be printed (it was not yet); it then counts as printed.
    fn first_time(&mut self, line: &shoal_proto::v1::LogLine) -> bool {
        let at = line.time_unix_nanos;
        let Some(pos) = self.0.get_mut(&line.task_id) else {
            self.0.insert(line.task_id.clone(), LogPosition { last: at, at_last: 1, replaying: None });
            return true;
        };
        if let Some(to_skip) = pos.replaying {
            if at < pos.last {
                return false;
            }
            if at == pos.last && to_skip > 0 {
                pos.replaying = Some(to_skip - 1);
                return false;
            }
            pos.replaying = None;
        }
        if at == pos.last {
            pos.at_last += 1;
        } else {
            (pos.last, pos.at_last) = (at, 1);
        }
        true
    }

    /// The read to take up again: every line from the earliest of the tasks' last times, each
    /// task skipping what it printed already.
    fn resume(&mut self, request: &shoal_proto::v1::ServiceLogsRequest) -> shoal_proto::v1::ServiceLogsRequest {
        for pos in self.0.values_mut() {
            pos.replaying = Some(pos.at_last);
        }
        match self.0.values().map(|p| p.last).min() {
            Some(at) => shoal_proto::v1::ServiceLogsRequest { since_unix_nanos: at, tail: -1, ..request.clone() },
            None => request.clone(),
        }
    }
}

async fn write_async(to: &mut (impl tokio::io::AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    to.write_all(bytes).await?;
    to.flush().await
}

/// How many times in a row `service logs` takes a broken read up again without reading anything.
const LOG_RESUMES_IN_A_ROW: u32 = 5;

fn stream_broken(status: &tonic::Status) -> bool {
    use tonic::Code;
    // Every code but the answers of a manager to the call itself: a connection's end comes as
    // one of several codes (an HTTP/2 GOAWAY's reason maps to ResourceExhausted, for one).
    !matches!(
        status.code(),
        Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

fn worth_retrying(error: &CliError) -> bool {
    match error {
        CliError::Unreachable { .. } => true,
        CliError::Status(status) => stream_broken(status),
        _ => false,
    }
}

/// Opens the stream again through the managers of `host`, the others than `from` first, retrying
/// until one answers or [`EVENTS_RECONNECT_FOR`] has passed; it replays what changed after `since`.
async fn rewatch(
    host: &str,
    from: &str,
    selection: &args::EventSelection,
    since: Option<args::events::Since>,
) -> Result<(Client, tonic::Streaming<shoal_proto::v1::WatchEvent>), CliError> {
    let deadline = tokio::time::Instant::now() + EVENTS_RECONNECT_FOR;
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut client = Client::reconnect_streaming(host, from).await?;
            let stream = client.watch(selection.types.clone(), &selection.service, since).await?;
            Ok::<_, CliError>((client, stream))
        };
        match attempt.await {
            Ok(found) => return Ok(found),
            // No manager answers yet, or the one that does has no leader yet: wait and retry.
            Err(e) if tokio::time::Instant::now() < deadline && worth_retrying(&e) => {}
            Err(e) => return Err(e),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(2));
    }
}

async fn events(host: &str, args: &EventsArgs) -> Result<(), CliError> {
    let selection = args
        .selection()
        .map_err(|message| CliError::Usage(args::usage_error(&["events"], ErrorKind::ArgumentConflict, message)))?;
    let mut client = Client::connect_streaming(host).await?;
    // Where a reconnect resumes: the last event's index, or before any, what this manager had
    // applied when the stream opened (changes from then on are in the stream or the replay).
    let mut resume = match args.since {
        Some(since) => Some(since),
        None => client.cluster_info(true).await.ok().map(|info| args::events::Since::Index(info.raft.applied.max(1))),
    };
    let mut stream = client.watch(selection.types.clone(), &selection.service, args.since).await?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = &mut interrupted => return Ok(()),
        };
        let lost = match message {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err("it closed the stream".to_string()),
            Err(status) if stream_broken(&status) => Err(CliError::from(status).to_string()),
            Err(status) => return Err(CliError::from(status)),
        };
        let event = match lost {
            Ok(event) => event,
            Err(why) => {
                // Each manager streams the changes it applies, so any other one carries on.
                let from = client.addr().to_string();
                let reconnecting = rewatch(host, &from, &selection, resume);
                let (new_client, new_stream) = tokio::select! {
                    result = reconnecting => result.map_err(|e| {
                        CliError::Message(format!("lost the manager at {from} ({why}) and found no other: {e}"))
                    })?,
                    _ = &mut interrupted => return Ok(()),
                };
                let gap = match resume {
                    Some(args::events::Since::Index(index)) => {
                        format!("replaying the objects changed after index {index}; removals in between are not shown")
                    }
                    Some(args::events::Since::Time(_)) => {
                        "replaying the objects changed since --since; removals in between are not shown".to_string()
                    }
                    None => "changes in between are not shown".to_string(),
                };
                eprintln!(
                    "events: lost the manager at {from} ({why}); continuing through {} ({gap})",
                    new_client.addr()
                );
                (client, stream) = (new_client, new_stream);
                continue;
            }
        };
        if let Some(index) = output::events::event_index(&event.event_json) {
            resume = Some(args::events::Since::Index(index));
        }
        if !selection.actions.is_empty() && !selection.actions.contains(&output::event_action(&event.event_json)) {
            continue;
        }
        let line = match args.format {
            EventFormat::Json => event.event_json.trim_end().to_string(),
            EventFormat::Text => output::event_line(&event.event_json),
        };
        if write_line(&line).is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod log_position_tests {
    use super::LogPositions;
    use shoal_proto::v1::{LogLine, ServiceLogsRequest};

    fn line(task: &str, at: i64, text: &str) -> LogLine {
        LogLine { task_id: task.into(), stream: 0, time_unix_nanos: at, data: text.as_bytes().to_vec() }
    }

    #[test]
    fn a_read_taken_up_again_prints_every_line_once_even_lines_sharing_a_time() {
        let mut printed = LogPositions::default();
        let first = [line("a", 10, "a1"), line("a", 20, "a2"), line("a", 20, "a3"), line("b", 15, "b1")];
        let shown: Vec<bool> = first.iter().map(|l| printed.first_time(l)).collect();
        assert_eq!(shown, [true, true, true, true], "lines sharing a time are all printed");
        let request = ServiceLogsRequest { reference: "web".into(), follow: true, tail: 5, since_unix_nanos: 0 };
        let resumed = printed.resume(&request);
        assert_eq!((resumed.since_unix_nanos, resumed.tail, resumed.follow), (15, -1, true));
        // The manager sends everything from time 15 again, then what is new.
        let again = [
            line("b", 15, "b1"),
            line("a", 20, "a2"),
            line("a", 20, "a3"),
            line("a", 20, "a4"),
            line("b", 30, "b2"),
            line("c", 5, "c1"),
        ];
        let new: Vec<&str> =
            again.iter().filter(|l| printed.first_time(l)).map(|l| std::str::from_utf8(&l.data).unwrap()).collect();
        assert_eq!(new, ["a4", "b2", "c1"]);
    }
}
