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
use crate::args::{
    ListOutput, StackConfigArgs, StackDeployArgs, StackHistoryArgs, StackLsArgs, StackPsArgs, StackRollbackArgs,
    StackServicesArgs,
};
use crate::client::Client;
use crate::commands::{ServiceList, print_error, print_out, print_service_tasks, service_list};
use crate::error::CliError;
use crate::output;
use crate::progress::{Deadline, Operation, wait_for_convergence_until};

use shoal_types::stack::{AtomicDeploy, GroupState, MemberChange, NewData, StackDeploy, StackRevision};
pub use shoal_types::stack::{DeployPlan, Step, namespace};

/// The services of `stack`, sorted by name.
pub fn stack_services<'a>(services: &'a [Service], stack: &str) -> Vec<&'a Service> {
    shoal_types::stack::stack_services(services, stack)
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

/// Decides what `deploy` does (see [`shoal_types::stack::plan_deploy`]), given the services the
/// files define by short name and the services that exist.
pub fn plan_deploy(
    stack: &str,
    desired: &BTreeMap<String, ServiceSpec>,
    existing: &[Service],
    prune: bool,
) -> Result<DeployPlan, Vec<String>> {
    let existing: Vec<&Service> = existing.iter().collect();
    shoal_types::stack::plan_deploy(stack, desired.values(), &existing, prune)
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
    // The networks the services are on: the stack's own are made with it (`default` too),
    // external ones must exist.
    let used: BTreeSet<&String> = loaded.services.values().flat_map(|s| s.task.networks.iter()).collect();
    if !used.is_empty() {
        let kind = DataKind::Network;
        let existing: BTreeSet<String> = client.list_data(kind).await?.into_iter().map(|o| o.spec.name).collect();
        for name in used {
            let declared = loaded.stack.networks.iter().find(|(key, def)| def.object_name(stack, key) == *name);
            if let Err(e) = shoal_types::validate_name("name", name) {
                problems.push(format!("network {name}: {}", e.message));
                continue;
            }
            if existing.contains(name) {
                continue;
            }
            if let Some((key, def)) = declared
                && def.external
            {
                problems.push(format!(
                    "network {name} (external, networks.{key} of the stack file) not found: create it first (shoal network create {name})"
                ));
                continue;
            }
            let mut labels = declared.map(|(_, def)| def.labels.clone()).unwrap_or_default();
            labels.insert(NAMESPACE_LABEL.to_string(), stack.to_string());
            create.push(NewData { kind, spec: shoal_types::DataSpec { name: name.clone(), labels, data: Vec::new() } });
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

/// Loads and checks the stack files, printing each warning to stderr as `warning: <text>`.
fn load(stack: &str, files: &[PathBuf]) -> Result<Loaded, CliError> {
    let loaded = shoal_compose::load(stack, files, &process_env()).map_err(|e| {
        if let shoal_compose::ComposeError::Warned { warnings, .. } = &e {
            let mut stderr = std::io::stderr().lock();
            for warning in warnings {
                let _ = writeln!(stderr, "warning: {warning}");
            }
        }
        CliError::Message(e.to_string())
    })?;
    let mut stderr = std::io::stderr().lock();
    for warning in &loaded.warnings {
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
    let loaded = load(&args.stack, &args.compose_files)?;
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
    let atomic = args.atomic || loaded.stack.atomic;
    let depends_on: BTreeMap<String, Vec<String>> = loaded
        .services
        .iter()
        .filter_map(|(short, spec)| {
            let deps = &loaded.stack.services.get(short)?.depends_on;
            (!deps.is_empty())
                .then(|| (spec.name.clone(), deps.iter().map(|d| format!("{}_{d}", args.stack)).collect()))
        })
        .collect();
    let timeout_ms = args.wait.timeout.map_or(DEFAULT_ATOMIC_TIMEOUT_MS, |t| t.as_std().as_millis() as u64);
    if args.dry_run {
        for object in &data {
            print_out(&format!("Would create {} {}\n", object.kind, object.spec.name));
        }
        dry_run(&mut client, &plan).await?;
        if atomic {
            print_out(&atomic_plan(&plan, &depends_on, timeout_ms));
        }
        return Ok(());
    }

    if !atomic && loaded.stack.services.values().any(|s| !s.depends_on.is_empty()) {
        eprintln!(
            "warning: depends_on only orders the rollout of an atomic deploy (--atomic or x-atomic: true); here every service rolls out at once, as docker stack deploy does"
        );
    }
    let route_lines = route_plan(&args.stack, &routes, &existing_routes, args.prune);
    let deploy = StackDeploy {
        stack: args.stack.clone(),
        services: loaded.services.values().cloned().collect(),
        routes,
        data,
        prune: args.prune,
        digest: digest(&loaded.normalized_yaml),
        atomic: atomic.then_some(AtomicDeploy { timeout_ms, depends_on }),
    };
    // Everything in one write: refused, it changed nothing.
    let (revision, warnings) = client.deploy_stack(&deploy).await.map_err(|e| nothing_changed(&args.stack, e))?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    let Some(revision) = revision else {
        // Nothing to change: no revision either.
        for step in &plan.steps {
            print_out(&format!("Service {} is unchanged\n", step.name()));
        }
        for line in route_lines {
            print_out(&line);
        }
        return Ok(());
    };
    for object in &deploy.data {
        print_out(&format!("Creating {} {}\n", object.kind, object.spec.name));
    }
    print_revision(&revision, &plan);
    for line in route_lines {
        print_out(&line);
    }
    if args.detach {
        return Ok(());
    }
    if revision.rollout.is_some() {
        return wait_group(&mut client, &revision, args.quiet, None).await;
    }
    let changed: Vec<(String, Operation)> = revision
        .services
        .iter()
        .filter_map(|s| match s.change {
            MemberChange::Created => Some((s.service_id.clone(), Operation::Create)),
            MemberChange::Updated => Some((s.service_id.clone(), Operation::Update)),
            MemberChange::Unchanged => None,
        })
        .collect();
    let services = client.list_services().await?;
    let changed: Vec<(Service, Operation)> = changed
        .into_iter()
        .filter_map(|(id, op)| services.iter().find(|s| s.id == id).map(|s| (s.clone(), op)))
        .collect();

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

/// An atomic deploy's group must have completed this long after the deploy unless `--timeout`
/// says otherwise (Helm's `--atomic` default).
const DEFAULT_ATOMIC_TIMEOUT_MS: u64 = 5 * 60 * 1000;

/// What `--dry-run` adds for an atomic deploy: the group, and the order its members start in
/// (those of one line together, each line once the lines before it completed).
pub fn atomic_plan(plan: &DeployPlan, depends_on: &BTreeMap<String, Vec<String>>, timeout_ms: u64) -> String {
    let changed: BTreeSet<&str> =
        plan.steps.iter().filter(|s| !matches!(s, Step::Unchanged(_))).map(|s| s.name()).collect();
    if changed.is_empty() {
        return "\nNothing changes: no stack rollout.\n".to_string();
    }
    let mut out = format!(
        "\nAs one stack rollout: if a service fails, or all have not completed within {}, every one goes back to its spec before the deploy and the created ones are removed.\n",
        shoal_types::GoDuration::from_millis(timeout_ms)
    );
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut step = 1;
    while done.len() < changed.len() {
        let ready: Vec<&str> = changed
            .iter()
            .copied()
            .filter(|name| !done.contains(name))
            .filter(|name| {
                depends_on
                    .get(*name)
                    .into_iter()
                    .flatten()
                    .all(|d| !changed.contains(d.as_str()) || done.contains(d.as_str()))
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        out.push_str(&format!("  {step}. {}\n", ready.join(", ")));
        done.extend(ready);
        step += 1;
    }
    out
}

/// The SHA-256 of the normalised stack files, in hex.
fn digest(text: &str) -> String {
    let sum = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    sum.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A deploy the leader refused changed nothing; one cut off in flight may have been written.
fn nothing_changed(stack: &str, error: CliError) -> CliError {
    use tonic::Code;
    match error {
        CliError::Status(status)
            if matches!(
                status.code(),
                Code::InvalidArgument
                    | Code::NotFound
                    | Code::AlreadyExists
                    | Code::FailedPrecondition
                    | Code::PermissionDenied
                    | Code::ResourceExhausted
            ) =>
        {
            CliError::Message(format!("stack {stack}: nothing was changed: {}", status.message()))
        }
        other => other,
    }
}

/// What the deploy did, service by service, as `docker stack deploy` says it.
fn print_revision(revision: &StackRevision, plan: &DeployPlan) {
    let mut out = String::new();
    for name in &revision.removed {
        out.push_str(&format!("Removing service {name}\n"));
    }
    for service in &revision.services {
        match service.change {
            MemberChange::Created => out.push_str(&format!("Creating service {}\n", service.name)),
            MemberChange::Updated => {
                out.push_str(&format!("Updating service {} (id: {})\n", service.name, service.service_id))
            }
            // Only the services of the files: the stack's others were left alone (no --prune).
            MemberChange::Unchanged if plan.steps.iter().any(|s| s.name() == service.name) => {
                out.push_str(&format!("Service {} is unchanged\n", service.name))
            }
            MemberChange::Unchanged => {}
        }
    }
    print_out(&out);
}

/// The lines saying what the deploy does to the stack's routes (decided before it is written).
fn route_plan(
    stack: &str,
    routes: &[shoal_types::traffic::RouteSpec],
    existing: &[shoal_types::traffic::Route],
    prune: bool,
) -> Vec<String> {
    let mut lines = Vec::new();
    if prune {
        for route in stack_routes(existing, stack).filter(|r| !routes.iter().any(|s| s.name == r.spec.name)) {
            lines.push(format!("Removing route {}\n", route.spec.name));
        }
    }
    for spec in routes {
        lines.push(match existing.iter().find(|r| r.spec.name == spec.name) {
            Some(current) if current.spec == *spec => format!("Route {} is unchanged\n", spec.name),
            Some(_) => format!("Updating route {}\n", spec.name),
            None => format!("Creating route {}\n", spec.name),
        });
    }
    lines
}

/// Follows a stack rollout (an atomic deploy's group, a stack rollback) until it ends, printing
/// each member's progress as it changes. Completed: exit 0; rolled back: exit 4, as a rolled back
/// `service update`; failed: exit 1.
async fn wait_group(
    client: &mut Client,
    revision: &StackRevision,
    quiet: bool,
    deadline: Option<Deadline>,
) -> Result<(), CliError> {
    let Some(group) = &revision.rollout else { return Ok(()) };
    if !quiet {
        print_out(&format!("Waiting for stack rollout {} ({} services)\n", group.id, group.members.len()));
    }
    let mut said: BTreeMap<String, String> = BTreeMap::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let kept = client.list_stack_revisions(&revision.stack).await?;
        let Some(now) = kept.iter().find(|r| r.number == revision.number).and_then(|r| r.rollout.clone()) else {
            return Err(CliError::Message(format!("stack rollout {} is no longer kept", group.id)));
        };
        if !quiet {
            for (member, line) in now.members.iter().zip(now.progress()) {
                if said.get(&member.name) != Some(&line) {
                    print_out(&format!("  {line}\n"));
                    said.insert(member.name.clone(), line);
                }
            }
        }
        match now.state {
            GroupState::Completed => {
                if !quiet {
                    print_out(&format!("Stack rollout {} completed\n", now.id));
                }
                return Ok(());
            }
            GroupState::RollbackCompleted => {
                print_error(&CliError::Message(format!("stack {} rolled back: {}", revision.stack, now.message)));
                return Err(CliError::ReportedExit(crate::error::EXIT_ROLLED_BACK));
            }
            GroupState::Failed | GroupState::Superseded => {
                return Err(CliError::Message(format!("stack {}: {}", revision.stack, now.message)));
            }
            GroupState::Updating | GroupState::RollbackStarted => {}
        }
        if let Some(deadline) = deadline
            && tokio::time::Instant::now() >= deadline.at
        {
            return Err(CliError::Message(format!(
                "stack rollout {} has not ended after {} ({}); it goes on in the cluster",
                now.id,
                deadline.given,
                now.progress().join(", ")
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            _ = &mut interrupted => return Err(CliError::Interrupted),
        }
    }
}

/// `stack history`: `REVISION  CREATED  CHANGE-CAUSE  SERVICES-CHANGED  ROLLOUT`.
pub async fn history(host: &str, args: &StackHistoryArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let kept = client.list_stack_revisions(&args.stack).await?;
    if kept.is_empty() {
        return Err(CliError::Message(format!("stack {} has no revision (it was never deployed)", args.stack)));
    }
    print_out(&history_table(&kept, crate::timefmt::now_millis()));
    Ok(())
}

/// The rows of `stack history`, oldest first.
pub fn history_table(kept: &[StackRevision], now: u64) -> String {
    let rows: Vec<Vec<String>> = kept
        .iter()
        .map(|r| {
            let changed = r.changed();
            vec![
                r.number.to_string(),
                format!(
                    "{} ago",
                    crate::timefmt::human_duration(std::time::Duration::from_millis(now.saturating_sub(r.created_at)))
                ),
                if r.change_cause.is_empty() { "<none>".into() } else { r.change_cause.clone() },
                if changed.is_empty() { "<none>".into() } else { changed.join(",") },
                r.rollout.as_ref().map_or_else(|| "-".into(), |g| g.state.as_str().to_string()),
            ]
        })
        .collect();
    output::table(&["REVISION", "CREATED", "CHANGE-CAUSE", "SERVICES-CHANGED", "ROLLOUT"], &rows)
}

/// `stack rollback`: every service back to its spec of an earlier stack revision, as one stack
/// rollout.
pub async fn rollback(host: &str, args: &StackRollbackArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    client.set_change_cause(args.change_cause.clone().unwrap_or_default());
    let (revision, warnings) = client
        .rollback_stack(&args.stack, args.to_revision.unwrap_or(0), args.prune)
        .await
        .map_err(|e| nothing_changed(&args.stack, e))?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    if !args.quiet {
        print_revision(&revision, &DeployPlan::default());
        print_out(&format!("Stack {} is at revision {} ({})\n", args.stack, revision.number, revision.change_cause));
    }
    if args.detach || revision.rollout.is_none() {
        return Ok(());
    }
    wait_group(&mut client, &revision, args.quiet, Deadline::after(args.wait.timeout)).await
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
    if !list.quiet && matches!(list.format, ListOutput::Table) {
        print_group_progress(&mut client, &args.stack).await?;
    }
    found.print(&list);
    Ok(())
}

/// A stack rollout under way, above `stack ps` and `stack services` tables: its state and each
/// member's, e.g. `Stack rollout app-3: updating (app_db: completed, app_api: waiting for app_db)`.
async fn print_group_progress(client: &mut Client, stack: &str) -> Result<(), CliError> {
    let kept = client.list_stack_revisions(stack).await?;
    if let Some(group) = kept.last().and_then(|r| r.rollout.as_ref()).filter(|g| !g.state.is_final()) {
        print_out(&format!(
            "Stack rollout {}: {} ({})\n\n",
            group.id,
            group.state.as_str(),
            group.progress().join(", ")
        ));
    }
    Ok(())
}

/// `rollout status STACK`: follows the stack's newest stack rollout until it ends (as `stack
/// deploy` does); `None` when the stack has none.
pub async fn group_status(host: &str, stack: &str, quiet: bool) -> Result<Option<()>, CliError> {
    let mut client = Client::connect(host).await?;
    let kept = client.list_stack_revisions(stack).await?;
    match kept.into_iter().rev().find(|r| r.rollout.is_some()) {
        Some(revision) => wait_group(&mut client, &revision, quiet, None).await.map(Some),
        None => Ok(None),
    }
}

pub async fn ps(host: &str, args: &StackPsArgs) -> Result<(), CliError> {
    let mut client = Client::connect(host).await?;
    let all = client.list_services().await?;
    let services = stack_services(&all, &args.stack);
    if services.is_empty() {
        return Err(CliError::Message(nothing_found(&args.stack)));
    }
    if !args.list.quiet && matches!(args.list.format, ListOutput::Table) {
        print_group_progress(&mut client, &args.stack).await?;
    }
    print_service_tasks(&mut client, &services, &args.list).await
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
        // The secrets, configs and networks the stack created (external ones carry no label of it).
        let mut data = Vec::new();
        for kind in [shoal_types::DataKind::Secret, shoal_types::DataKind::Config, shoal_types::DataKind::Network] {
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
