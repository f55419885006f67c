//! The manager's dashboard (`shoal-manager --dashboard-addr`, loopback only): server-rendered
//! pages of services, nodes and rollouts, a rollout's timeline drawn by `shoal-chart`, and
//! buttons that pause, resume, approve or abort a rollout through the same control API the CLI
//! calls. Pages follow the cluster live: `/events` is a server-sent event stream fed by the
//! store's changes, and the page's few lines of JavaScript fetch it again when one arrives. No
//! build step, no JavaScript toolchain, no file to serve.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use shoal_chart::escape;
use shoal_metrics::{RequestHead, read_request, respond};
use shoal_proto::v1::control_server::Control;
use shoal_store::State;
use shoal_types::{Rollout, Service, ServiceMode, TaskState};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::Manager;
use crate::api::ControlApi;

/// Pages and actions served at once; more wait in the listen queue.
const MAX_OPEN: usize = 32;
/// Live streams open at once (each holds a connection for as long as its page is open).
const MAX_STREAMS: usize = 16;
/// Changes within this window reach a page as one event.
const COALESCE: Duration = Duration::from_millis(250);
/// The header an action must carry: a page from another origin cannot set it without a CORS
/// preflight, which the dashboard never answers.
const ACTION_HEADER: &str = "x-shoal-dashboard";

/// Refuses an address other than loopback: the dashboard has no authentication of its own.
pub fn check_addr(addr: std::net::SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "--dashboard-addr {addr}: the dashboard serves on loopback only (it has no authentication); reach it remotely through an SSH tunnel"
        ))
    }
}

/// Whether a request names this dashboard as its host: a page of another site whose name was
/// pointed at 127.0.0.1 (DNS rebinding) names its own.
fn own_host(head: &RequestHead, port: u16) -> bool {
    let Some(host) = head.header("host") else { return false };
    ["127.0.0.1", "localhost", "[::1]"].iter().any(|name| host == format!("{name}:{port}"))
}

/// Serves the dashboard on `listener` until the manager stops.
pub async fn serve(manager: Arc<Manager>, listener: TcpListener) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let api = Arc::new(ControlApi::new(manager.clone()));
    let streams = Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS));
    shoal_metrics::accept_each(listener, MAX_OPEN, "dashboard", move |stream| {
        let (manager, api, streams) = (manager.clone(), api.clone(), streams.clone());
        async move { answer(stream, port, &manager, &api, &streams).await }
    })
    .await
}

async fn answer(
    mut stream: TcpStream,
    port: u16,
    manager: &Arc<Manager>,
    api: &ControlApi,
    streams: &Arc<tokio::sync::Semaphore>,
) -> std::io::Result<()> {
    let Some(head) = read_request(&mut stream).await? else {
        return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", b"request head too large\n")
            .await;
    };
    if !own_host(&head, port) {
        return respond(
            &mut stream,
            "421 Misdirected Request",
            "text/plain",
            b"open the dashboard as 127.0.0.1 or localhost\n",
        )
        .await;
    }
    if head.path == "/events" && head.method == "GET" {
        return match streams.clone().try_acquire_owned() {
            Ok(permit) => {
                let _permit = permit;
                events(stream, manager).await
            }
            Err(_) => respond(&mut stream, "503 Service Unavailable", "text/plain", b"too many live pages\n").await,
        };
    }
    // A page or an action: answered whole within the deadline, or the connection goes.
    match tokio::time::timeout(shoal_metrics::ANSWER_TIMEOUT, page(&mut stream, &head, port, manager, api)).await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

async fn page(
    stream: &mut TcpStream,
    head: &RequestHead,
    port: u16,
    manager: &Arc<Manager>,
    api: &ControlApi,
) -> std::io::Result<()> {
    let path = head.path.split('?').next().unwrap_or_default().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let html = "text/html; charset=utf-8";
    match (head.method.as_str(), segments.as_slice()) {
        ("GET", []) => {
            let page = index_page(&manager.state(), crate::now_millis());
            respond(stream, "200 OK", html, page.as_bytes()).await
        }
        ("GET", ["rollouts", id]) => {
            let page = {
                let state = manager.state();
                state.all_rollouts().find(|r| r.id == *id).map(|r| rollout_page(&state, r, crate::now_millis()))
            };
            match page {
                Some(page) => respond(stream, "200 OK", html, page.as_bytes()).await,
                None => {
                    let page = layout("Not found", &format!("<p>No rollout {} is kept.</p>", escape(id)));
                    respond(stream, "404 Not Found", html, page.as_bytes()).await
                }
            }
        }
        ("GET", ["rollouts", id, "timeline.svg"]) => {
            let svg = manager
                .state()
                .all_rollouts()
                .find(|r| r.id == *id)
                .map(|r| shoal_chart::rollout_svg(r, crate::now_millis()));
            match svg {
                Some(svg) => respond(stream, "200 OK", "image/svg+xml", svg.as_bytes()).await,
                None => respond(stream, "404 Not Found", "text/plain", b"no such rollout\n").await,
            }
        }
        ("POST", ["api", "rollouts", service, op]) => {
            let (status, body) = action(head, port, api, service, op).await;
            respond(stream, status, "application/json", body.as_bytes()).await
        }
        ("GET" | "POST", _) => {
            respond(stream, "404 Not Found", html, layout("Not found", "<p>No such page.</p>").as_bytes()).await
        }
        _ => respond(stream, "405 Method Not Allowed", "text/plain", b"GET pages, POST actions\n").await,
    }
}

/// A rollout command from a button, through the control API (forwarded to the leader as the
/// CLI's would be).
async fn action(head: &RequestHead, port: u16, api: &ControlApi, service: &str, op: &str) -> (&'static str, String) {
    use shoal_proto::v1::RolloutOp;
    let json = |ok: bool, message: &str| serde_json::json!({ "ok": ok, "message": message }).to_string();
    if head.header(ACTION_HEADER) != Some("1") {
        return ("403 Forbidden", json(false, "actions must carry the X-Shoal-Dashboard: 1 header"));
    }
    // A browser names the page that sent it: it must be one of the dashboard's own.
    if let Some(origin) = head.header("origin")
        && !["127.0.0.1", "localhost", "[::1]"].iter().any(|name| origin == format!("http://{name}:{port}"))
    {
        return ("403 Forbidden", json(false, "actions come from the dashboard's own pages only"));
    }
    let op = match op {
        "pause" => RolloutOp::Pause,
        "resume" => RolloutOp::Resume,
        "approve" => RolloutOp::Approve,
        "abort" => RolloutOp::Abort,
        other => {
            return (
                "400 Bad Request",
                json(false, &format!("unknown action {other:?} (allowed: pause, resume, approve, abort)")),
            );
        }
    };
    let request = tonic::Request::new(shoal_proto::v1::ControlRolloutRequest {
        service: service.to_string(),
        op: op as i32,
        change_cause: if op == RolloutOp::Abort { "aborted from the dashboard".into() } else { String::new() },
        rollout_id: String::new(),
    });
    match api.control_rollout(request).await {
        Ok(_) => ("200 OK", json(true, "done")),
        Err(status) => ("409 Conflict", json(false, status.message())),
    }
}

/// A server-sent event each time the store changes (coalesced), and a comment every 15 s so a
/// closed page is noticed.
async fn events(mut stream: TcpStream, manager: &Manager) -> std::io::Result<()> {
    let mut changes = manager.subscribe();
    stream
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n: live\n\n",
        )
        .await?;
    loop {
        let change = tokio::time::timeout(Duration::from_secs(15), changes.recv()).await;
        match change {
            Err(_) => write_within(&mut stream, b": still here\n\n").await?,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return Ok(()),
            Ok(_) => {
                tokio::time::sleep(COALESCE).await;
                while changes.try_recv().is_ok() {}
                write_within(&mut stream, b"event: change\ndata: changed\n\n").await?;
            }
        }
    }
}

/// Writes to a live page, which must take it within 10 s (a page that stops reading goes).
async fn write_within(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(Duration::from_secs(10), stream.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

const STYLE: &str = r#"
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #e4e4e4; text-align: left; }
th { background: #f3f5f7; } .muted { color: #777; } .bad { color: #c62828; } .ok { color: #2e7d32; }
button { margin-right: 6px; padding: 4px 12px; } #message { margin-left: 1em; }
nav a { margin-right: 1em; }
"#;

/// Fetches the page again when the store changes; buttons post their action, then refresh.
const SCRIPT: &str = r#"
const source = new EventSource('/events');
let pending = null;
async function refresh() {
  const response = await fetch(location.href, { cache: 'no-store' });
  if (!response.ok) return;
  const page = new DOMParser().parseFromString(await response.text(), 'text/html');
  document.getElementById('main').replaceWith(page.getElementById('main'));
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
}
source.addEventListener('change', () => { clearTimeout(pending); pending = setTimeout(refresh, 100); });
document.addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-op]');
  if (!button) return;
  const response = await fetch('/api/rollouts/' + encodeURIComponent(button.dataset.service) + '/' + button.dataset.op,
    { method: 'POST', headers: { 'X-Shoal-Dashboard': '1' } });
  const answer = await response.json();
  document.getElementById('message').textContent = answer.ok ? button.dataset.op + ': done' : answer.message;
  refresh();
});
"#;

fn layout(title: &str, main: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{} · shoal</title><style>{STYLE}</style></head><body><nav><a href=\"/\">shoal</a><span id=\"message\"></span></nav><div id=\"main\">{main}</div><script>{SCRIPT}</script></body></html>",
        escape(title)
    )
}

fn ago(now: u64, at: u64) -> String {
    let secs = now.saturating_sub(at) / 1000;
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

fn replicas(state: &State, service: &Service) -> String {
    let running = state
        .tasks_of_service(&service.id)
        .filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running)
        .count();
    match service.spec.mode {
        ServiceMode::Replicated { replicas } => format!("{running}/{replicas}"),
        _ => {
            let wanted = state.tasks_of_service(&service.id).filter(|t| t.desired_state == TaskState::Running).count();
            format!("{running}/{wanted} (global)")
        }
    }
}

/// Services, nodes, rollouts and stack rollouts.
pub fn index_page(state: &State, now: u64) -> String {
    let mut main = String::from("<h1>shoal</h1>");
    let mut services: Vec<&Service> = state.services().collect();
    services.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    main.push_str("<h2>Services</h2><table id=\"services\"><tr><th>NAME</th><th>REPLICAS</th><th>IMAGE</th><th>UPDATE</th><th>ROLLOUT</th></tr>");
    for service in &services {
        let update = service
            .update_status
            .as_ref()
            .map(|s| format!("{} <span class=\"muted\">{}</span>", s.state.as_str(), escape(&s.message)))
            .unwrap_or_else(|| "<span class=\"muted\">-</span>".into());
        let rollout = state
            .rollouts(&service.id)
            .last()
            .map(|r| format!("<a href=\"/rollouts/{0}\">{0}</a>", escape(&r.id)))
            .unwrap_or_default();
        let _ = write!(
            main,
            "<tr data-service=\"{name}\"><td>{name}</td><td>{}</td><td>{}</td><td>{update}</td><td>{rollout}</td></tr>",
            replicas(state, service),
            escape(&service.spec.task.container.image),
            name = escape(&service.spec.name),
        );
    }
    if services.is_empty() {
        main.push_str("<tr><td colspan=\"5\" class=\"muted\">no service</td></tr>");
    }
    main.push_str("</table>");

    main.push_str("<h2>Nodes</h2><table id=\"nodes\"><tr><th>HOSTNAME</th><th>ROLE</th><th>STATUS</th><th>AVAILABILITY</th><th>TASKS</th></tr>");
    let mut nodes: Vec<&shoal_types::Node> = state.nodes().collect();
    nodes.sort_by(|a, b| a.description.hostname.cmp(&b.description.hostname).then(a.id.cmp(&b.id)));
    for node in nodes {
        let running = state.tasks_on_node(&node.id).filter(|t| t.status.state == TaskState::Running).count();
        let status = node.status.state.as_str();
        let class = if status == "ready" { "ok" } else { "bad" };
        let _ = write!(
            main,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{status}</td><td>{}</td><td>{running} running</td></tr>",
            escape(&node.description.hostname),
            node.spec.role.as_str(),
            node.spec.availability.as_str(),
        );
    }
    main.push_str("</table>");

    main.push_str("<h2>Rollouts</h2><table id=\"rollouts\"><tr><th>ID</th><th>SERVICE</th><th>KIND</th><th>STATE</th><th>STARTED</th><th>SLOTS</th></tr>");
    let mut rollouts: Vec<&Rollout> = state.all_rollouts().map(|r| &**r).collect();
    rollouts.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.id.cmp(&b.id)));
    for rollout in rollouts.iter().take(50) {
        let slots: usize = rollout.batches.iter().map(|b| b.slots.len()).sum();
        let _ = write!(
            main,
            "<tr><td><a href=\"/rollouts/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{slots}</td></tr>",
            escape(&rollout.service_name),
            if rollout.kind == shoal_types::RolloutKind::Rollback { "rollback" } else { "update" },
            rollout.state.as_str(),
            ago(now, rollout.started_at),
            id = escape(&rollout.id),
        );
    }
    if rollouts.is_empty() {
        main.push_str("<tr><td colspan=\"6\" class=\"muted\">no rollout yet</td></tr>");
    }
    main.push_str("</table>");

    let names: Vec<String> = state.stack_names().map(str::to_string).collect();
    let groups: Vec<_> =
        names.iter().flat_map(|n| state.stack_revisions(n)).filter_map(|r| r.rollout.as_ref()).collect();
    if !groups.is_empty() {
        main.push_str(
            "<h2>Stack rollouts</h2><table id=\"stack-rollouts\"><tr><th>GROUP</th><th>STATE</th><th>MEMBERS</th></tr>",
        );
        for group in groups {
            let _ = write!(
                main,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&group.id),
                group.state.as_str(),
                escape(&group.progress().join(", "))
            );
        }
        main.push_str("</table>");
    }
    layout("shoal", &main)
}

/// One rollout: its state, the buttons that move it, its timeline and its batches.
pub fn rollout_page(state: &State, rollout: &Rollout, now: u64) -> String {
    let mut main = format!(
        "<h1 id=\"rollout\" data-state=\"{state}\">Rollout {id}</h1><p>{kind} of <b>{service}</b>, revision {from} → {to}: <b id=\"state\">{state}</b> <span class=\"muted\">{message}</span></p>",
        id = escape(&rollout.id),
        kind = if rollout.kind == shoal_types::RolloutKind::Rollback { "rollback" } else { "update" },
        service = escape(&rollout.service_name),
        from = rollout.from_revision,
        to = rollout.to_revision,
        state = rollout.state.as_str(),
        message = escape(&rollout.message),
    );
    // Only the newest rollout of a service can be moved; the buttons say what the store allows.
    let current = state.rollouts(&rollout.service_id).last().is_some_and(|r| r.id == rollout.id);
    if current && !rollout.state.is_final() {
        main.push_str("<p id=\"actions\">");
        for (op, label) in [("pause", "Pause"), ("resume", "Resume"), ("approve", "Approve step"), ("abort", "Abort")] {
            let _ = write!(
                main,
                "<button data-op=\"{op}\" data-service=\"{}\">{label}</button>",
                escape(&rollout.service_id)
            );
        }
        main.push_str("</p>");
    } else {
        main.push_str("<p id=\"actions\" class=\"muted\">ended: nothing to pause, resume or abort</p>");
    }
    main.push_str("<div id=\"timeline\">");
    main.push_str(&shoal_chart::rollout_svg(rollout, now));
    main.push_str("</div>");
    main.push_str("<h2>Batches</h2><table id=\"batches\"><tr><th>BATCH</th><th>SLOT</th><th>NODE</th><th>NEW TASK</th><th>RUNNING</th><th>FAILURE</th></tr>");
    for batch in &rollout.batches {
        for slot in &batch.slots {
            let running =
                slot.running_at.map(|at| format!("{:.1}s", at.saturating_sub(rollout.started_at) as f64 / 1000.0));
            let node = state.node(&slot.node).map_or(slot.node.as_str(), |n| n.description.hostname.as_str());
            let _ = write!(
                main,
                "<tr class=\"slot\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
                batch.number,
                escape(&slot.name),
                escape(node),
                escape(&slot.new_task),
                running.unwrap_or_else(|| "-".into()),
                escape(slot.failure.as_deref().unwrap_or("")),
            );
        }
    }
    main.push_str("</table><h2>Events</h2><table id=\"events\"><tr><th>WHEN</th><th>STATE</th><th>MESSAGE</th></tr>");
    for event in &rollout.events {
        let _ = write!(
            main,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ago(now, event.at),
            event.state.as_str(),
            escape(&event.message)
        );
    }
    main.push_str("</table>");
    layout(&format!("Rollout {}", rollout.id), &main)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_store::{Action, Batch};

    #[test]
    fn only_loopback_addresses_serve_the_dashboard() {
        assert!(check_addr("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(check_addr("[::1]:8080".parse().unwrap()).is_ok());
        let err = check_addr("0.0.0.0:8080".parse().unwrap()).unwrap_err();
        assert!(err.contains("loopback only"), "{err}");
    }

    #[test]
    fn pages_escape_what_users_wrote() {
        let mut state = State::default();
        let mut spec = shoal_types::ServiceSpec::new("web", "shoal/busybox:1");
        spec.labels.insert("x".into(), "<b>".into());
        spec.task.container.image = "img<script>alert(1)</script>".into();
        state.apply(1, &Batch::new(1_000, vec![Action::CreateService { id: "s1".into(), spec }])).unwrap();
        let page = index_page(&state, 2_000);
        assert!(page.contains("img&lt;script&gt;alert(1)&lt;/script&gt;"), "{page}");
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("<tr data-service=\"web\"><td>web</td><td>0/1</td>"), "{page}");
    }
}
