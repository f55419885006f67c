//! `shoal stack …`: services deployed together from compose-like stack files (shoal-compose).
//!
//! A stack is the set of services labelled `com.docker.stack.namespace=<stack>`; its services are
//! named `<stack>_<service>`. `deploy` plans everything first ([`plan_deploy`], pure) and only
//! then changes the cluster: a bad file or a name conflict changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;
use shoal_compose::{Loaded, NAMESPACE_LABEL};
use shoal_types::{Service, ServiceSpec};

use crate::args::filters::ServiceFilter;
use crate::args::stack::DEFAULT_CONFIG_STACK;
use crate::args::{ListOutput, StackConfigArgs, StackDeployArgs, StackLsArgs, StackPsArgs, StackServicesArgs};
use crate::client::Client;
use crate::commands::{ServiceList, print_error, print_out, print_service_tasks, service_list};
use crate::error::CliError;
use crate::output;
use crate::progress::{Deadline, Operation, wait_for_convergence_until};

/// The stack a service belongs to (its namespace label), if any.
pub fn namespace(service: &Service) -> Option<&str> {
    service.spec.labels.get(NAMESPACE_LABEL).map(String::as_str)
}

/// The services of `stack`, sorted by name.
pub fn stack_services<'a>(services: &'a [Service], stack: &str) -> Vec<&'a Service> {
    let mut found: Vec<&Service> = services.iter().filter(|s| namespace(s) == Some(stack)).collect();
    found.sort_by(|a, b| a.spec.name.cmp(&b.spec.name).then_with(|| a.id.cmp(&b.id)));
    found
}

/// One row of `stack ls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StackSummary {
    pub name: String,
    pub services: usize,
}

/// Every stack that has services, sorted by name.
pub fn stacks(services: &[Service]) -> Vec<StackSummary> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for stack in services.iter().filter_map(namespace) {
        *counts.entry(stack).or_default() += 1;
    }
    counts.into_iter().map(|(name, services)| StackSummary { name: name.to_string(), services }).collect()
}

/// `stack ls`: `NAME  SERVICES`.
pub fn stack_table(stacks: &[StackSummary]) -> String {
    output::table(&["NAME", "SERVICES"], &stack_rows(stacks))
}

/// The cells of `stack ls` (those of [`crate::args::format::STACK_FIELDS`]).
pub fn stack_rows(stacks: &[StackSummary]) -> Vec<Vec<String>> {
    stacks.iter().map(|s| vec![s.name.clone(), s.services.to_string()]).collect()
}

/// What `deploy` does to one service of the files.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// No service of that name exists.
    Create(ServiceSpec),
    /// It exists and its spec differs: replace it, based on the version read.
    Update { current: Box<Service>, spec: ServiceSpec },
    /// It exists with this very spec: not touched at all.
    Unchanged(Box<Service>),
}

impl Step {
    pub fn name(&self) -> &str {
        match self {
            Step::Create(spec) | Step::Update { spec, .. } => &spec.name,
            Step::Unchanged(current) => &current.spec.name,
        }
    }
}

/// Everything `deploy` will do, decided before anything changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeployPlan {
    /// The stack's services no longer in the files (only with `--prune`), sorted by name.
    pub remove: Vec<Service>,
    /// One step per service of the files, sorted by name.
    pub steps: Vec<Step>,
}

/// The spec as the manager will store and return it (a JSON round trip), so that comparing it
/// with a spec read back is not fooled by how a value is represented.
fn as_stored(spec: &ServiceSpec) -> ServiceSpec {
    serde_json::to_string(spec).ok().and_then(|json| serde_json::from_str(&json).ok()).unwrap_or_else(|| spec.clone())
}

/// Decides what `deploy` does, given the services the files define (by short name) and the
/// services that exist. Refuses, with every problem found, when a service of the stack's name
/// exists outside the stack (no namespace label, or another stack's) or would change mode.
///
/// A service is unchanged when its spec equals the one from the files once `task.force_update`
/// is carried over from the current spec (a deploy does not undo `service update --force`).
pub fn plan_deploy(
    stack: &str,
    desired: &BTreeMap<String, ServiceSpec>,
    existing: &[Service],
    prune: bool,
) -> Result<DeployPlan, Vec<String>> {
    let by_name: BTreeMap<&str, &Service> = existing.iter().map(|s| (s.spec.name.as_str(), s)).collect();
    let mut problems = Vec::new();
    let mut steps = Vec::new();
    let mut wanted: Vec<&ServiceSpec> = desired.values().collect();
    wanted.sort_by(|a, b| a.name.cmp(&b.name));
    for spec in wanted {
        let Some(current) = by_name.get(spec.name.as_str()) else {
            steps.push(Step::Create(spec.clone()));
            continue;
        };
        if namespace(current) != Some(stack) {
            let owner = match namespace(current) {
                Some(other) => format!("it belongs to stack {other}"),
                None => format!("it has no {NAMESPACE_LABEL} label"),
            };
            problems.push(format!(
                "service {} already exists and is not part of stack {stack} ({owner}); remove or rename it, or use another stack name",
                spec.name
            ));
            continue;
        }
        if std::mem::discriminant(&current.spec.mode) != std::mem::discriminant(&spec.mode) {
            problems.push(format!(
                "service {} cannot change from {} to {} mode: remove it first (shoal service rm {})",
                spec.name,
                current.spec.mode.as_str(),
                spec.mode.as_str(),
                spec.name
            ));
            continue;
        }
        let mut spec = as_stored(spec);
        spec.task.force_update = current.spec.task.force_update;
        if spec == current.spec {
            steps.push(Step::Unchanged(Box::new((*current).clone())));
        } else {
            steps.push(Step::Update { current: Box::new((*current).clone()), spec });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut remove = Vec::new();
    if prune {
        let names: BTreeSet<&str> = desired.values().map(|s| s.name.as_str()).collect();
        remove = stack_services(existing, stack)
            .into_iter()
            .filter(|s| !names.contains(s.spec.name.as_str()))
            .cloned()
            .collect();
    }
    Ok(DeployPlan { remove, steps })
}

/// A secret or config `deploy` creates.
struct NewData {
    kind: shoal_types::DataKind,
    spec: shoal_types::DataSpec,
}

/// The stack's secrets and configs to create (with their values read), decided before anything
/// changes: an external one that does not exist, or a file that cannot be read, refuses the
/// deploy. One that exists already is kept as it is (values cannot change; remove the stack or
/// the object to replace it), as Swarm refuses to change one.
async fn plan_data(
    client: &mut Client,
    stack: &str,
    loaded: &Loaded,
    files: &[PathBuf],
) -> Result<Vec<NewData>, CliError> {
    use shoal_types::DataKind;
    // Relative files are read from the first stack file's directory.
    let base = files
        .first()
        .filter(|f| f.as_os_str() != shoal_compose::STDIN_FILE)
        .and_then(|f| f.parent().map(PathBuf::from))
        .unwrap_or_default();
    let mut problems = Vec::new();
    let mut create = Vec::new();
    for (kind, defs) in [(DataKind::Secret, &loaded.stack.secrets), (DataKind::Config, &loaded.stack.configs)] {
        if defs.is_empty() {
            continue;
        }
        let existing: BTreeSet<String> = client.list_data(kind).await?.into_iter().map(|o| o.spec.name).collect();
        for (key, def) in defs {
            let name = def.object_name(stack, key);
            // With the stack's prefix a name may pass the file's check and still be too long.
            if let Err(why) = shoal_types::validate_data_name(&name) {
                problems.push(format!("{kind}s.{key}: the {kind}'s name {name}: {why}"));
                continue;
            }
            if existing.contains(&name) {
                continue;
            }
            if def.external {
                problems.push(format!(
                    "{kind} {name} (external, {kind}s.{key} of the stack file) not found: create it first (shoal {kind} create {name} FILE)"
                ));
                continue;
            }
            let Some(file) = &def.file else { continue };
            let path = if file.starts_with('/') { PathBuf::from(file) } else { base.join(file) };
            match crate::commands::read_value(kind, &path.display().to_string()) {
                Ok(data) => {
                    let mut labels = def.labels.clone();
                    labels.insert(NAMESPACE_LABEL.to_string(), stack.to_string());
                    create.push(NewData { kind, spec: shoal_types::DataSpec { name, labels, data } });
                }
                Err(e) => problems.push(format!("{kind}s.{key}: {e}")),
            }
        }
    }
    if !problems.is_empty() {
        return Err(report(problems));
    }
    Ok(create)
}

/// The environment variables of this process that are valid UTF-8 (what `${VAR}` refers to).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

/// Refuses a stack that uses keys shoal does not support yet (volumes, secrets, configs,
/// networks), one `Error: file:line:column: key.path: …` line each; the services would run
/// without their data, secrets or networks. `--ignore-unsupported` deploys them anyway.
pub fn refuse_unsupported(loaded: &Loaded) -> Result<(), Vec<String>> {
    if loaded.unsupported.is_empty() {
        return Ok(());
    }
    Err(loaded
        .unsupported
        .iter()
        .map(|key| format!("{key}; refused (deploy with --ignore-unsupported to run the services without it)"))
        .collect())
}

/// Loads and checks the stack files, printing each warning to stderr as `warning: <text>`.
fn load(stack: &str, files: &[PathBuf]) -> Result<Loaded, CliError> {
    load_and_warn(stack, files, true)
}

/// Loads and checks the stack files, printing warnings to stderr as `warning: <text>`; those of
/// the keys [`refuse_unsupported`] refuses only if `warn_unsupported`.
fn load_and_warn(stack: &str, files: &[PathBuf], warn_unsupported: bool) -> Result<Loaded, CliError> {
    let loaded = shoal_compose::load(stack, files, &process_env()).map_err(|e| {
        if let shoal_compose::ComposeError::Warned { warnings, .. } = &e {
            let mut stderr = std::io::stderr().lock();
            for warning in warnings {
                let _ = writeln!(stderr, "warning: {warning}");
            }
        }
        CliError::Message(e.to_string())
    })?;
    let refused: BTreeSet<String> =
        if warn_unsupported { BTreeSet::new() } else { loaded.unsupported.iter().map(|k| k.warning()).collect() };
    let mut stderr = std::io::stderr().lock();
    for warning in loaded.warnings.iter().filter(|w| !refused.contains(*w)) {
        let _ = writeln!(stderr, "warning: {warning}");
    }
    Ok(loaded)
}

/// Prints each problem as `Error: …`; the command then exits 1.
fn report(problems: Vec<String>) -> CliError {
    for problem in problems {
        print_error(&CliError::Message(problem));
    }
    CliError::Reported
}

/// `stack deploy --dry-run`: what the deploy would do, service by service, with the manager's
/// plan of each update; nothing is written.
async fn dry_run(client: &mut Client, plan: &DeployPlan) -> Result<(), CliError> {
    let mut out = String::from("Dry run: nothing was changed. The deploy would:\n");
    for service in &plan.remove {
        out.push_str(&format!("\nremove service {}\n", service.spec.name));
    }
    for step in &plan.steps {
        match step {
            Step::Create(spec) => {
                out.push_str(&format!("\ncreate service {} ({})\n", spec.name, spec.task.container.image));
            }
            Step::Unchanged(current) => out.push_str(&format!("\nleave service {} as it is\n", current.spec.name)),
            Step::Update { current, spec } => {
                let mut update = client
                    .plan_update(&current.id, spec)
                    .await
                    .map_err(|e| CliError::Message(format!("{}: {e}", spec.name)))?;
                let pretty = |spec: &ServiceSpec| serde_json::to_string_pretty(spec).unwrap_or_default();
                update.spec_changes = output::line_diff(&pretty(&current.spec), &pretty(spec));
                out.push_str(&format!("\nupdate service {}:\n", spec.name));
                // The plan's own text, without its first line (said once above).
                for line in output::update_plan(&update).lines().skip(2) {
                    out.push_str(&format!("  {line}\n"));
                }
            }
        }
    }
    print_out(&out);
    Ok(())
}

pub async fn deploy(host: &str, args: &StackDeployArgs) -> Result<(), CliError> {
    let loaded = load_and_warn(&args.stack, &args.compose_files, args.ignore_unsupported)?;
    if !args.ignore_unsupported {
        refuse_unsupported(&loaded).map_err(report)?;
    }
    // Checked before anything changes.
    let routes =
        shoal_compose::route_specs(&args.stack, &loaded.stack).map_err(|e| CliError::Message(e.to_string()))?;
    let mut client = Client::connect(host).await?;
    // `--change-cause`, else the stack file's `x-change-cause`, else the command line.
    let cause = args.change_cause.clone().or_else(|| loaded.stack.change_cause.clone());
    client.set_change_cause(crate::commands::change_cause(&cause));
    let existing = client.list_services().await?;
    let plan = plan_deploy(&args.stack, &loaded.services, &existing, args.prune).map_err(report)?;
    let existing_routes = client.list_routes().await?;
    let conflicts = route_conflicts(&args.stack, &routes, &loaded.services, &existing, &existing_routes, args.prune);
    if !conflicts.is_empty() {
        return Err(report(conflicts));
    }
    let data = plan_data(&mut client, &args.stack, &loaded, &args.compose_files).await?;
    if args.dry_run {
        for object in &data {
            print_out(&format!("Would create {} {}\n", object.kind, object.spec.name));
        }
        return dry_run(&mut client, &plan).await;
    }

    // Secrets and configs first: the services refer to them.
    for object in data {
        print_out(&format!("Creating {} {}\n", object.kind, object.spec.name));
        client
            .create_data(object.kind, &object.spec)
            .await
            .map_err(|e| CliError::Message(format!("{} {}: {e}", object.kind, object.spec.name)))?;
    }

    for service in &plan.remove {
        print_out(&format!("Removing service {}\n", service.spec.name));
        client
            .remove_service(&service.id)
            .await
            .map_err(|e| CliError::Message(format!("{}: {e}", service.spec.name)))?;
    }
    let mut changed: Vec<(Service, Operation)> = Vec::new();
    for step in &plan.steps {
        let in_service = |e: CliError| CliError::Message(format!("{}: {e}", step.name()));
        match step {
            Step::Create(spec) => {
                print_out(&format!("Creating service {}\n", spec.name));
                let created = client.create_service(spec).await.map_err(in_service)?;
                changed.push((created, Operation::Create));
            }
            Step::Update { current, spec } => {
                print_out(&format!("Updating service {} (id: {})\n", spec.name, current.id));
                let updated = client.update_service(&current.id, current.version, spec).await.map_err(in_service)?;
                changed.push((updated, Operation::Update));
            }
            Step::Unchanged(current) => print_out(&format!("Service {} is unchanged\n", current.spec.name)),
        }
    }
    deploy_routes(&mut client, &args.stack, routes, args.prune).await?;
    if args.detach {
        return Ok(());
    }

    // One service after the other; each failure is reported as it happens, and the first one
    // decides the exit code.
    let mut first_failure: Option<u8> = None;
    // One --timeout for the whole deploy: a service that converged in time is still reported
    // as such after the deadline, the others as timed out.
    let deadline = Deadline::after(args.wait.timeout);
    for (service, operation) in &changed {
        if !args.quiet {
            print_out(&format!("Waiting for service {} to converge\n", service.spec.name));
        }
        match wait_for_convergence_until(host, service, *operation, args.quiet, deadline).await {
            Ok(()) => {}
            Err(CliError::Interrupted) => return Err(CliError::Interrupted),
            Err(error) => {
                let error = CliError::InService { service: service.spec.name.clone(), error: Box::new(error) };
                print_error(&error);
                first_failure.get_or_insert(error.exit_code());
            }
        }
    }
    match first_failure {
        Some(code) => Err(CliError::ReportedExit(code)),
        None => Ok(()),
    }
}

pub async fn ls(host: &str, args: &StackLsArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let found = stacks(&client.list_services().await?);
    match &args.format {
        ListOutput::Json => print_out(&output::json_array(&found)),
        ListOutput::Table => print_out(&stack_table(&found)),
        ListOutput::Template(template) => {
            print_out(&output::template_rows(template, crate::args::format::STACK_FIELDS, &stack_rows(&found)))
        }
    }
    Ok(())
}

fn nothing_found(stack: &str) -> String {
    format!("nothing found in stack: {stack}")
}

/// `stack services`: `service ls` of the stack's services (its namespace is one more label
/// filter, as in docker).
pub async fn services(host: &str, args: &StackServicesArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let mut list = args.list.clone();
    list.filters.push(ServiceFilter::Label(NAMESPACE_LABEL.to_string(), Some(args.stack.clone())));
    let found = service_list(&mut client, &list).await?;
    if found.is_empty() {
        // docker: a message on stderr, exit 0 (JSON still prints its empty array).
        let _ = writeln!(std::io::stderr().lock(), "Nothing found in stack: {}", args.stack);
        if !matches!(found, ServiceList::Services(_)) {
            return Ok(());
        }
    }
    found.print(&list);
    Ok(())
}

pub async fn ps(host: &str, args: &StackPsArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let all = client.list_services().await?;
    let services = stack_services(&all, &args.stack);
    if services.is_empty() {
        return Err(CliError::Message(nothing_found(&args.stack)));
    }
    print_service_tasks(&mut client, &services, &args.list).await
}

/// Creates, updates or leaves alone the stack's `x-routes` (after its services, which they
/// select); with `prune`, removes the stack's routes no longer in its files.
async fn deploy_routes(
    client: &mut Client,
    stack: &str,
    routes: Vec<shoal_types::traffic::RouteSpec>,
    prune: bool,
) -> Result<(), CliError> {
    let existing = client.list_routes().await?;
    let warn = |warnings: Vec<String>| {
        for warning in warnings {
            eprintln!("warning: {warning}");
        }
    };
    // Pruned first: a renamed route may take over its predecessor's port.
    if prune {
        for route in stack_routes(&existing, stack).filter(|r| !routes.iter().any(|s| s.name == r.spec.name)) {
            print_out(&format!("Removing route {}\n", route.spec.name));
            client
                .remove_route(&route.id)
                .await
                .map_err(|e| CliError::Message(format!("route {}: {e}", route.spec.name)))?;
        }
    }
    for spec in &routes {
        let in_route = |e: CliError| CliError::Message(format!("route {}: {e}", spec.name));
        match existing.iter().find(|r| r.spec.name == spec.name) {
            Some(current) if current.spec == *spec => print_out(&format!("Route {} is unchanged\n", spec.name)),
            Some(current) => {
                print_out(&format!("Updating route {}\n", spec.name));
                let (_, warnings) = client.update_route(&current.id, current.version, spec).await.map_err(in_route)?;
                warn(warnings);
            }
            None => {
                print_out(&format!("Creating route {}\n", spec.name));
                let (_, warnings) = client.create_route(spec).await.map_err(in_route)?;
                warn(warnings);
            }
        }
    }
    Ok(())
}

/// Why the stack's routes cannot be deployed as they stand, checked before anything changes:
/// a route port published by another of the stack's services or routes, or by a service or
/// route outside the stack that the deploy leaves in place.
fn route_conflicts(
    stack: &str,
    routes: &[shoal_types::traffic::RouteSpec],
    services: &std::collections::BTreeMap<String, shoal_types::ServiceSpec>,
    existing: &[Service],
    existing_routes: &[shoal_types::traffic::Route],
    prune: bool,
) -> Vec<String> {
    let publishes = |spec: &shoal_types::ServiceSpec, port: u16| {
        spec.endpoint.ports.iter().any(|p| p.is_ingress() && p.published == port)
    };
    let mut problems = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let what = format!("x-routes: route {} (port {})", route.name, route.port);
        if let Some((name, _)) = services.iter().find(|(_, spec)| publishes(spec, route.port)) {
            problems.push(format!("{what}: port {}/tcp is also published by the stack's service {name}", route.port));
        }
        if let Some(other) = routes[..i].iter().find(|r| r.port == route.port) {
            problems.push(format!("{what}: port {}/tcp is also the stack's route {}", route.port, other.name));
        }
        // The stack's own services are replaced (or pruned) by this deploy.
        if let Some(other) = existing.iter().find(|s| namespace(s) != Some(stack) && publishes(&s.spec, route.port)) {
            problems
                .push(format!("{what}: port {}/tcp is already published by service {}", route.port, other.spec.name));
        }
        let mine = |r: &&shoal_types::traffic::Route| {
            r.spec.name == route.name
                || (prune && r.spec.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(stack))
        };
        if let Some(other) = existing_routes.iter().find(|r| r.spec.port == route.port && !mine(r)) {
            problems.push(format!("{what}: port {}/tcp is already published by route {}", route.port, other.spec.name));
        }
    }
    problems
}

/// The routes stack `stack` made (they carry its namespace label).
fn stack_routes<'a>(
    routes: &'a [shoal_types::traffic::Route],
    stack: &'a str,
) -> impl Iterator<Item = &'a shoal_types::traffic::Route> + 'a {
    routes.iter().filter(move |r| r.spec.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(stack))
}

pub async fn rm(host: &str, names: &[String]) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let all = client.list_services().await?;
    let mut failed = false;
    for stack in names {
        let services = stack_services(&all, stack);
        // The secrets and configs the stack created (external ones carry no label of it).
        let mut data = Vec::new();
        for kind in [shoal_types::DataKind::Secret, shoal_types::DataKind::Config] {
            data.extend(
                client
                    .list_data(kind)
                    .await?
                    .into_iter()
                    .filter(|o| o.spec.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(stack.as_str())),
            );
        }
        let all_routes = client.list_routes().await?;
        let routes: Vec<&shoal_types::traffic::Route> = stack_routes(&all_routes, stack).collect();
        if services.is_empty() && data.is_empty() && routes.is_empty() {
            print_error(&CliError::Message(nothing_found(stack)));
            failed = true;
            continue;
        }
        // Routes first: their ports close before the services behind them go.
        for route in routes {
            print_out(&format!("Removing route {}\n", route.spec.name));
            if let Err(e) = client.remove_route(&route.id).await {
                print_error(&CliError::Message(format!("route {}: {e}", route.spec.name)));
                failed = true;
            }
        }
        for service in services {
            print_out(&format!("Removing service {}\n", service.spec.name));
            if let Err(e) = client.remove_service(&service.id).await {
                print_error(&CliError::Message(format!("{}: {e}", service.spec.name)));
                failed = true;
            }
        }
        for object in data {
            print_out(&format!("Removing {} {}\n", object.kind, object.spec.name));
            if let Err(e) = client.remove_data(object.kind, &object.id).await {
                print_error(&CliError::Message(format!("{} {}: {e}", object.kind, object.spec.name)));
                failed = true;
            }
        }
    }
    if failed { Err(CliError::Reported) } else { Ok(()) }
}

/// `stack config`: the merged, interpolated, normalised file; no manager needed.
pub fn config(args: &StackConfigArgs) -> Result<(), CliError> {
    let stack = args.stack.as_deref().unwrap_or(DEFAULT_CONFIG_STACK);
    let loaded = load(stack, &args.compose_files)?;
    print_out(&loaded.normalized_yaml);
    Ok(())
}

#[cfg(test)]
mod tests;
