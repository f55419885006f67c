//! Running a parsed command line against a manager.

use std::io::Write;

use clap::error::ErrorKind;
use shoal_types::{Node, Service};

use crate::args::{
    self, Cli, ClusterCommand, Command, CreateArgs, InfoFormat, InspectArgs, ListArgs, ListFormat, NodeCommand,
    NodeInspectArgs, ServiceCommand,
};
use crate::client::Client;
use crate::error::CliError;
use crate::{names, output};

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
        CliError::Reported => Ok(()),
        other => writeln!(stderr, "Error: {other}"),
    };
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let host = cli.host.as_str();
    match cli.command {
        Command::Service(ServiceCommand::Create(args)) => service_create(host, &args).await,
        Command::Service(ServiceCommand::Ls(args)) => service_ls(host, &args).await,
        Command::Service(ServiceCommand::Inspect(args)) => service_inspect(host, &args).await,
        Command::Service(ServiceCommand::Rm(args)) => service_rm(host, &args.services).await,
        Command::Node(NodeCommand::Ls(args)) => node_ls(host, &args).await,
        Command::Node(NodeCommand::Inspect(args)) => node_inspect(host, &args).await,
        Command::Node(NodeCommand::Demote(args)) => node_demote(host, &args.nodes).await,
        Command::Node(NodeCommand::Rm(args)) => node_rm(host, &args.nodes, args.force).await,
        Command::Cluster(ClusterCommand::Info(args)) => cluster_info(host, args.format, args.local).await,
    }
}

async fn service_create(host: &str, args: &CreateArgs) -> Result<(), CliError> {
    let mut spec = args.to_spec().map_err(|message| {
        CliError::Usage(args::usage_error(&["service", "create"], ErrorKind::ArgumentConflict, message))
    })?;
    spec.validate().map_err(|e| CliError::Message(e.to_string()))?;
    let mut client = Client::connect(host).await?;
    let mut attempts = 1;
    loop {
        match client.create_service(&spec).await {
            Ok(service) => {
                print_out(&format!("{}\n", service.id));
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
    let services = client.list_services().await?;
    if args.quiet {
        print_out(&output::service_ids(&services));
        return Ok(());
    }
    if args.format == ListFormat::Json {
        let sorted: Vec<&Service> = output::sort_services(&services);
        print_out(&output::json_array(&sorted));
        return Ok(());
    }
    let tasks = client.list_tasks("", "").await?;
    // Only used to leave out tasks on nodes that are down; the table is still useful without.
    let nodes = client.list_nodes().await.unwrap_or_default();
    print_out(&output::service_table(&services, &tasks, &nodes));
    Ok(())
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
    let mut failed = false;
    for name in services {
        match client.remove_service(name).await {
            Ok(_) => print_out(&format!("{name}\n")),
            Err(e) => {
                print_error(&e);
                failed = true;
            }
        }
    }
    if failed { Err(CliError::Reported) } else { Ok(()) }
}

async fn node_ls(host: &str, args: &ListArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let nodes = client.list_nodes().await?;
    if args.quiet {
        print_out(&output::node_ids(&nodes));
    } else if args.format == ListFormat::Json {
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
    let mut failed = false;
    for name in nodes {
        match client.remove_node(name, force).await {
            Ok(id) => print_out(&format!("{id}\n")),
            Err(e) => {
                print_error(&e);
                failed = true;
            }
        }
    }
    if failed { Err(CliError::Reported) } else { Ok(()) }
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
