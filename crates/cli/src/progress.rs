//! Waiting for a service to converge after `create`, `update`, `rollback` and `scale` when `-d`
//! is not given: docker's progress display ("overall progress: N out of M tasks", "verify: …").
//!
//! [`wait_for_convergence`] reads the service and its tasks once, then follows the manager's
//! change stream (`Watch`, filtered to the service) and keeps a [`View`] of them up to date from
//! its events, so a large service costs one `ListTasks`, not one per redraw. A broken stream
//! (the manager died, dropped events for a slow reader) is resumed through the next manager of
//! `--host`, replaying what changed since the last event seen. Every [`REDRAW_INTERVAL`] the view
//! becomes a [`Frame`] if it changed (a pure function of the service, its tasks and the time, see
//! [`frame`]), which is drawn in place on a terminal ([`Tty`]) or as plain lines, each printed
//! only when it changed ([`Plain`]). When to stop, and with which error, is decided by
//! [`Watch::outcome`]; the exit codes themselves live in [`crate::error`].

mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::time::Duration;

use shoal_proto::v1 as pb;
use shoal_types::{GoDuration, Node, Service, ServiceMode, StepWait, Task, TaskState, UpdateState};

pub use self::view::{Action, Changed, Event, View, parse_event};
use crate::client::Client;
use crate::commands::print_out;
use crate::error::{CliError, RolloutEnd};
use crate::output::tasks::error_text;
use crate::timefmt;

/// How often the display is redrawn from what the stream brought (if anything changed, or a
/// countdown on it did).
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(100);
/// Connecting, opening a stream and each read (the service, its tasks, the nodes) must be
/// answered within this, or the manager counts as lost.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// No manager may be followed for this long in a row (managers restarting, a leader election)
/// before giving up.
pub const UNREACHABLE_GRACE: Duration = Duration::from_secs(10);
/// The first pause between attempts to reach a manager again; it doubles up to
/// [`MAX_RETRY_PAUSE`].
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// At most this many slot lines are drawn on a terminal.
pub const MAX_BARS: usize = 20;
/// The message of a rollback a user asked for (`service rollback`, `update --rollback`).
pub const MANUAL_ROLLBACK_MESSAGE: &str = "manually requested rollback";

/// A bar is full (`running`) at this many steps.
const MAX_PROGRESS: u64 = 9;
/// The `=` characters of a full bar (docker's).
const BAR_WIDTH: u64 = 50;
/// Task errors are cut to this many characters on a terminal (docker's).
const MAX_ERROR_CHARS: usize = 75;
/// Longest state word shown with a bar ("preparing"); state words are padded to it.
const STATE_WIDTH: usize = 9;

/// The change being waited for (decides the wording and which exit codes apply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Rollback,
    Scale,
}

impl Operation {
    /// Only `update` and `rollback` exit 3/4/5; `create` and `scale` exit 1 on those ends.
    fn has_rollout_codes(self) -> bool {
        matches!(self, Operation::Update | Operation::Rollback)
    }
}

/// What one redraw shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The service's name (for `verify: Service <name> converged`).
    pub service_name: String,
    /// `overall progress: 2 out of 6 tasks`, `rolling back update: 2 out of 6 tasks`, or
    /// `overall progress: waiting for new tasks` (a global service without tasks yet).
    pub header: String,
    /// One per replica slot (global: per node), sorted by slot (node id).
    pub slots: Vec<SlotLine>,
    /// The update status message while rolling back (`update rolled back due to …`).
    pub rollback: Option<String>,
    /// A canary update waiting at a step: `step 1/3: 1/4 updated, waiting for approval`.
    pub step: Option<String>,
    pub verify: Option<Verify>,
    /// Slots whose current task runs the current spec.
    pub running: u64,
    /// Replicas, or for a global service the nodes with tasks meant to run.
    pub total: u64,
    /// `running == total` (and, for a global service, there are tasks at all), and no task of a
    /// slot removed by a scale-down is still on a node.
    pub all_running: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotLine {
    /// On a terminal: `3/6` (position among the slots / total), or a global task's short node id.
    pub label: String,
    /// In plain output: `web.3`, or `web.<node id>` for a global task.
    pub name: String,
    /// The slot's task running the current spec; `None` while the slot is not replaced yet.
    pub task: Option<SlotTask>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotTask {
    pub state: TaskState,
    /// What the slot's line shows as its error, as `service ps` shows it: the task's error, or
    /// for a restart waiting out its backoff `restarting in 40s: <why>`.
    pub err: String,
    /// The task's own error, without the countdown.
    pub cause: String,
    /// When a restart waiting out its backoff may start (ms since the epoch): plain output tells
    /// one wait from the next by it, as the countdown alone is no change worth a line.
    pub restart_at: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Every slot runs the new spec; the cluster watches them for the monitor period.
    Waiting {
        seconds: u64,
    },
    Converged,
}

/// A bar's steps for a state: new=1 … starting=7, running=9 (full); 0 for ended states.
pub fn state_steps(state: TaskState) -> u64 {
    match state {
        TaskState::New => 1,
        TaskState::Pending => 2,
        TaskState::Assigned => 3,
        TaskState::Accepted => 4,
        TaskState::Preparing => 5,
        TaskState::Ready => 6,
        TaskState::Starting => 7,
        TaskState::Running => MAX_PROGRESS,
        _ => 0,
    }
}

/// docker's bar: `[` + `=` × (steps/9 of 50) + `>` + spaces to 50 + `]`.
pub fn bar(steps: u64) -> String {
    let filled = (steps.min(MAX_PROGRESS) * 100 / MAX_PROGRESS / 2).min(BAR_WIDTH);
    format!("[{}>{}]", "=".repeat(filled as usize), " ".repeat((BAR_WIDTH - filled) as usize))
}

/// Whether `task` runs the service's current spec (swarmkit's `IsTaskDirty`, negated): the same
/// spec version, or the same task spec and endpoint. A change to the placement alone leaves a
/// task current if its node still satisfies the constraints; without `nodes` that is assumed.
pub fn up_to_date(service: &Service, task: &Task, nodes: Option<&[Node]>) -> bool {
    if task.spec_version == service.spec_version {
        return true;
    }
    if task.endpoint != service.spec.endpoint {
        return false;
    }
    let wanted = &service.spec.task;
    if *task.spec == *wanted {
        return true;
    }
    if !placement_only_change(service, task) {
        return false;
    }
    match nodes {
        None => true,
        Some(nodes) => nodes
            .iter()
            .find(|n| n.id == task.node_id)
            .is_some_and(|node| wanted.placement.constraints.iter().all(|c| c.matches(|k| node.attribute(k)))),
    }
}

/// The task differs from the current spec in its placement only (and is placed on a node).
fn placement_only_change(service: &Service, task: &Task) -> bool {
    let wanted = &service.spec.task;
    if task.node_id.is_empty() || task.spec.placement == wanted.placement {
        return false;
    }
    let mut same = (*task.spec).clone();
    same.placement = wanted.placement.clone();
    same == *wanted
}

/// Whether judging the tasks needs the nodes (some task differs by placement only).
pub fn needs_nodes<'a>(service: &Service, tasks: impl IntoIterator<Item = &'a Task>) -> bool {
    tasks.into_iter().any(|t| {
        t.service_id == service.id
            && t.spec_version != service.spec_version
            && t.endpoint == service.spec.endpoint
            && placement_only_change(service, t)
    })
}

/// The frame for `service` and its `tasks` at `now_ms` (ms since the epoch, the clock the
/// manager stamps `running_at` with). A placement-only change is taken to leave tasks current.
pub fn frame<'a>(service: &Service, tasks: impl IntoIterator<Item = &'a Task>, now_ms: u64) -> Frame {
    frame_on(service, tasks, None, now_ms)
}

fn newest<'a>(tasks: impl Iterator<Item = &'a Task>) -> Option<&'a Task> {
    tasks.max_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())))
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// [`frame`], judging placement-only changes against `nodes` when given. The order of `tasks`
/// does not matter.
pub fn frame_on<'a>(
    service: &Service,
    tasks: impl IntoIterator<Item = &'a Task>,
    nodes: Option<&[Node]>,
    now_ms: u64,
) -> Frame {
    let status = service.update_status.as_ref();
    let state = status.map(|s| s.state);
    let rolling_back = matches!(
        state,
        Some(UpdateState::RollbackStarted | UpdateState::RollbackPaused | UpdateState::RollbackCompleted)
    );
    let global = service.spec.mode.is_global();
    let name = &service.spec.name;

    let mut groups: BTreeMap<(u64, &str), Vec<&Task>> = BTreeMap::new();
    for task in tasks.into_iter().filter(|t| t.service_id == service.id) {
        let key = if global { (0, task.node_id.as_str()) } else { (task.slot, "") };
        groups.entry(key).or_default().push(task);
    }
    let runnable = |t: &&Task| t.desired_state <= TaskState::Running;
    let current = |t: &&Task| up_to_date(service, t, nodes);

    // (slot or node, the task to show, whether the slot has a task meant to run)
    let mut shown: Vec<((u64, &str), Option<&Task>, bool)> = Vec::new();
    for (key, group) in &groups {
        let has_runnable = group.iter().any(runnable);
        // A slot whose newest task is current but ended without a replacement (e.g. restart
        // condition none) is still shown, with its failure.
        let ended_current =
            newest(group.iter().copied()).filter(|t| t.desired_state < TaskState::Remove && current(t) && !runnable(t));
        if !has_runnable && ended_current.is_none() {
            continue;
        }
        let task = newest(group.iter().copied().filter(|t| runnable(t) && current(t))).or(ended_current);
        shown.push((*key, task, has_runnable));
    }

    let is_running = |t: &Task| t.desired_state <= TaskState::Running && t.status.state == TaskState::Running;
    // Scaling down: until the orchestrator has picked the slots to remove, more slots have a task
    // meant to run than there are replicas. Only `replicas` of them remain, so only those are
    // shown and counted: the orchestrator's order (slots with a running task first, then the
    // lowest), less its spreading across nodes, which the tasks alone do not tell.
    if let ServiceMode::Replicated { replicas } = service.spec.mode {
        let mut meant_to_run: Vec<(bool, u64)> = shown
            .iter()
            .filter(|(_, _, has_runnable)| *has_runnable)
            .map(|((slot, _), task, _)| (!task.is_some_and(is_running), *slot))
            .collect();
        if meant_to_run.len() as u64 > replicas {
            meant_to_run.sort_unstable();
            let removed: BTreeSet<u64> = meant_to_run
                .into_iter()
                .skip(usize::try_from(replicas).unwrap_or(usize::MAX))
                .map(|(_, slot)| slot)
                .collect();
            shown.retain(|((slot, _), _, _)| !removed.contains(slot));
        }
    }
    // Tasks of removed slots that an agent may still run: `service ls` counts them until they
    // stop, so the service has not converged before they are gone.
    let kept: BTreeSet<(u64, &str)> = shown.iter().map(|(key, _, _)| *key).collect();
    let leaving = !global
        && groups
            .iter()
            .filter(|(key, _)| !kept.contains(*key))
            .flat_map(|(_, group)| group)
            .any(|t| t.status.state >= TaskState::Assigned && !t.status.state.is_terminal());

    let total = match service.spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        // Jobs are not waited for (see `wait_for_convergence`); shown as their slots at work.
        ServiceMode::Global | ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob => {
            shown.iter().filter(|(_, _, has_runnable)| *has_runnable).count() as u64
        }
    };
    let running = shown.iter().filter(|(_, task, _)| task.is_some_and(is_running)).count() as u64;
    let all_running = running == total && (!global || total > 0) && !leaving;

    let slots = shown
        .iter()
        .enumerate()
        .map(|(position, ((slot, node), task, _))| {
            let (label, name) = if global {
                (short(node).to_string(), format!("{name}.{node}"))
            } else {
                (format!("{}/{total}", position + 1), format!("{name}.{slot}"))
            };
            let task = task.map(|t| SlotTask {
                state: t.status.state,
                err: error_text(t, now_ms),
                cause: t.status.err.clone(),
                restart_at: t.restart_held_until(now_ms),
            });
            SlotLine { label, name, task }
        })
        .collect();

    let header = if global && total == 0 {
        "overall progress: waiting for new tasks".to_string()
    } else if rolling_back {
        format!("rolling back update: {running} out of {total} tasks")
    } else {
        format!("overall progress: {running} out of {total} tasks")
    };

    let rollback = status.filter(|_| rolling_back).map(|s| s.message.clone()).filter(|m| !m.is_empty());

    let verify = match state {
        None => all_running.then_some(Verify::Converged),
        Some(UpdateState::Completed | UpdateState::RollbackCompleted) => Some(Verify::Converged),
        Some(UpdateState::Paused | UpdateState::RollbackPaused) => None,
        Some(UpdateState::Updating | UpdateState::RollbackStarted) => all_running.then(|| {
            let config = if rolling_back { &service.spec.rollback_config } else { &service.spec.update_config };
            let millis = |d: shoal_types::GoDuration| u64::try_from(d.as_std().as_millis()).unwrap_or(u64::MAX);
            let (delay, monitor) = (millis(config.delay), millis(config.monitor));
            // The manager's final window: monitor, or delay + 1s when the delay is not shorter,
            // after the last slot's delay, counted from when its task was first seen running.
            let window = if delay >= monitor && delay > 0 { delay.saturating_add(1_000) } else { monitor };
            let span = delay.saturating_add(window);
            let last = shown.iter().filter_map(|(_, task, _)| task.and_then(|t| t.running_at)).max();
            let remaining = last.map_or(span, |at| at.saturating_add(span).saturating_sub(now_ms)).min(span);
            Verify::Waiting { seconds: remaining.div_ceil(1_000).max(1) }
        }),
    };

    let step = status
        .filter(|s| s.state == UpdateState::Updating && s.step.as_ref().is_some_and(|step| step.waiting.is_some()))
        .map(|s| s.message.clone());
    Frame { service_name: name.clone(), header, slots, rollback, step, verify, running, total, all_running }
}

/// An error on one line, cut to `max` characters with `…`.
fn one_line(text: &str, max: usize) -> String {
    let flat = text.replace(['\r', '\n'], " ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

impl SlotLine {
    /// `1/6: running   [====…>]`, `2/6: pending   no suitable node (…)`, `3/6: failed    <error>`,
    /// or `4/6:` while the slot is not replaced yet.
    pub fn tty_line(&self) -> String {
        let Some(task) = &self.task else {
            return format!("{}:", self.label);
        };
        let state = task.state.as_str();
        if !task.err.is_empty() {
            // The cut is docker's for the task's error; a restart's countdown comes on top of it.
            let err = match task.err.strip_suffix(task.cause.as_str()) {
                Some(countdown) if !task.cause.is_empty() => {
                    format!("{countdown}{}", one_line(&task.cause, MAX_ERROR_CHARS))
                }
                _ => one_line(&task.err, MAX_ERROR_CHARS),
            };
            format!("{}: {state:<STATE_WIDTH$} {err}", self.label)
        } else if task.state.is_terminal() || task.state == TaskState::Draining {
            format!("{}: {state}", self.label)
        } else {
            format!("{}: {state:<STATE_WIDTH$} {}", self.label, bar(state_steps(task.state)))
        }
    }

    /// What must differ for plain output to print the slot's line again: its state, its error
    /// or the restart it waits for, but not the countdown to that restart.
    fn plain_change(&self) -> Option<String> {
        let task = self.task.as_ref()?;
        Some(format!("{}\n{}\n{:?}", task.state, task.cause, task.restart_at))
    }

    /// `web.3: running`, `web.3: failed: <error>`, `web.3: new: restarting in 40s: <error>`;
    /// `None` while the slot is not replaced yet.
    pub fn plain_line(&self) -> Option<String> {
        let task = self.task.as_ref()?;
        Some(if task.err.is_empty() {
            format!("{}: {}", self.name, task.state)
        } else {
            format!("{}: {}: {}", self.name, task.state, one_line(&task.err, usize::MAX))
        })
    }
}

impl Frame {
    /// Whether time alone changes the frame: the verify countdown, or a restart's on a slot.
    pub fn changes_with_time(&self) -> bool {
        matches!(self.verify, Some(Verify::Waiting { .. }))
            || self.slots.iter().any(|s| s.task.as_ref().is_some_and(|t| t.restart_at.is_some()))
    }

    /// What a terminal shows, top to bottom.
    pub fn tty_lines(&self) -> Vec<String> {
        let mut lines = vec![self.header.clone()];
        lines.extend(self.slots.iter().take(MAX_BARS).map(SlotLine::tty_line));
        if let Some(message) = &self.rollback {
            lines.push(format!("rollback: {message}"));
        }
        if let Some(message) = &self.step {
            lines.push(format!("canary: {message}"));
        }
        match self.verify {
            Some(Verify::Waiting { seconds }) => {
                lines.push(format!("verify: Waiting {seconds} seconds to verify that tasks are stable..."));
            }
            Some(Verify::Converged) => lines.push(format!("verify: Service {} converged", self.service_name)),
            None => {}
        }
        lines
    }

    /// Plain output as (key, line): a line is printed when what it says under its key changed.
    pub fn plain_lines(&self) -> Vec<(String, String)> {
        self.plain_entries().into_iter().map(|(key, _, line)| (key, line)).collect()
    }

    /// (key, what must change for the line to be printed again, line).
    fn plain_entries(&self) -> Vec<(String, String, String)> {
        let same = |key: &str, line: String| (key.to_string(), line.clone(), line);
        let mut lines = vec![same("overall", self.header.clone())];
        lines.extend(self.slots.iter().filter_map(|s| Some((s.name.clone(), s.plain_change()?, s.plain_line()?))));
        if let Some(message) = &self.rollback {
            lines.push(same("rollback", format!("rollback: {message}")));
        }
        if let Some(message) = &self.step {
            lines.push(same("canary", format!("canary: {message}")));
        }
        match self.verify {
            Some(Verify::Waiting { .. }) => {
                lines.push(same("verify", "verify: waiting for tasks to be stable".to_string()));
            }
            Some(Verify::Converged) => {
                lines.push(same("verify", format!("verify: Service {} converged", self.service_name)));
            }
            None => {}
        }
        lines
    }
}

/// In-place drawing on a terminal: the cursor goes back up over the previous frame and every
/// line is cleared before it is rewritten. Lines are cut to the terminal width so that none
/// wraps (which would break the count of lines to go back over).
#[derive(Debug)]
pub struct Tty {
    drawn: Vec<String>,
    width: usize,
}

impl Tty {
    pub fn new(width: usize) -> Tty {
        Tty { drawn: Vec::new(), width: width.max(20) }
    }

    /// The bytes that replace the previous frame with `lines`; empty when nothing changed.
    pub fn render(&mut self, lines: &[String]) -> String {
        let lines: Vec<String> = lines.iter().map(|l| cut(l, self.width - 1)).collect();
        if lines == self.drawn {
            return String::new();
        }
        let mut out = String::new();
        if !self.drawn.is_empty() {
            out.push_str(&format!("\x1b[{}A", self.drawn.len()));
        }
        for line in &lines {
            out.push_str("\r\x1b[2K");
            out.push_str(line);
            out.push('\n');
        }
        let extra = self.drawn.len().saturating_sub(lines.len());
        if extra > 0 {
            for _ in 0..extra {
                out.push_str("\r\x1b[2K\n");
            }
            out.push_str(&format!("\x1b[{extra}A"));
        }
        self.drawn = lines;
        out
    }
}

fn cut(line: &str, width: usize) -> String {
    if line.chars().count() <= width { line.to_string() } else { line.chars().take(width).collect() }
}

/// The terminal's width: `$COLUMNS` if set, else 80.
fn terminal_width() -> usize {
    std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse().ok()).filter(|w| *w > 0).unwrap_or(80)
}

/// Plain lines for pipes and logs, never redrawn: a line is printed only when what it says
/// differs from the last one printed under the same key (the header, i.e. the count; each slot's
/// state, error or awaited restart; `rollback`; `verify`), so a service that cannot come up adds
/// a few lines per attempt, not one per redraw.
#[derive(Debug, Default)]
pub struct Plain {
    last: HashMap<String, String>,
}

impl Plain {
    pub fn render(&mut self, frame: &Frame) -> String {
        let mut out = String::new();
        for (key, change, line) in frame.plain_entries() {
            if self.last.get(&key) != Some(&change) {
                out.push_str(&line);
                out.push('\n');
                self.last.insert(key, change);
            }
        }
        out
    }
}

enum Output {
    Quiet,
    Tty(Tty),
    Plain(Plain),
}

impl Output {
    fn new(quiet: bool) -> Output {
        if quiet {
            Output::Quiet
        } else if std::io::stdout().is_terminal() {
            Output::Tty(Tty::new(terminal_width()))
        } else {
            Output::Plain(Plain::default())
        }
    }

    fn show(&mut self, frame: &Frame) {
        let text = match self {
            Output::Quiet => return,
            Output::Tty(tty) => tty.render(&frame.tty_lines()),
            Output::Plain(plain) => plain.render(frame),
        };
        if !text.is_empty() {
            print_out(&text);
        }
    }
}

/// What the wait remembers between frames: the first rollback message seen tells a manual
/// rollback from an automatic one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    pub operation: Operation,
    /// Views of the service older than the one the change returned are ignored.
    pub min_version: u64,
    pub first_rollback: Option<String>,
}

impl Watch {
    /// Starts from the service as the change returned it.
    pub fn new(operation: Operation, service: &Service) -> Watch {
        let mut watch = Watch { operation, min_version: service.version, first_rollback: None };
        watch.observe(service);
        watch
    }

    /// Notes a state of the service (the first `rollback_started` message).
    pub fn observe(&mut self, service: &Service) {
        if self.first_rollback.is_none()
            && let Some(status) = &service.update_status
            && status.state == UpdateState::RollbackStarted
        {
            self.first_rollback = Some(status.message.clone());
        }
    }

    /// Whether a rollback was asked for by a user (else the cluster rolled back a failed update).
    fn manual_rollback(&self) -> bool {
        match &self.first_rollback {
            // Also "manually requested rollback to revision N", and an abort by hand.
            Some(message) => {
                message.starts_with(MANUAL_ROLLBACK_MESSAGE) || message.starts_with(shoal_types::MANUALLY_ABORTED)
            }
            None => self.operation == Operation::Rollback,
        }
    }

    fn failed(&self, end: RolloutEnd, message: &str) -> CliError {
        CliError::Rollout { end, message: message.to_string(), own_code: self.operation.has_rollout_codes() }
    }

    /// `None` to keep waiting; otherwise how the wait ends. Without an update status the
    /// service has converged once every slot runs the current spec; with one, when the status
    /// says the update or rollback ended.
    pub fn outcome(&self, service: &Service, frame: &Frame) -> Option<Result<(), CliError>> {
        let Some(status) = &service.update_status else {
            return frame.all_running.then_some(Ok(()));
        };
        let awaits_approval = status.step.as_ref().is_some_and(|s| s.waiting == Some(StepWait::Approval));
        match status.state {
            // A canary step waiting for `rollout approve`: the update did what it could alone.
            UpdateState::Updating if awaits_approval && self.operation != Operation::Rollback => Some(Ok(())),
            UpdateState::Updating | UpdateState::RollbackStarted => None,
            UpdateState::Completed => Some(Ok(())),
            UpdateState::Paused => Some(Err(self.failed(RolloutEnd::UpdatePaused, &status.message))),
            UpdateState::RollbackPaused => Some(Err(self.failed(RolloutEnd::RollbackPaused, &status.message))),
            UpdateState::RollbackCompleted if self.manual_rollback() => Some(Ok(())),
            UpdateState::RollbackCompleted => {
                let message = self.first_rollback.as_deref().unwrap_or(&status.message);
                Some(Err(self.failed(RolloutEnd::RolledBack, message)))
            }
        }
    }
}

/// Errors worth retrying: the manager restarting, a leader election, a lost connection.
fn transient(error: &CliError) -> bool {
    use tonic::Code;
    matches!(error, CliError::Unreachable { .. })
        || matches!(
            error.code(),
            Some(
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Unknown
                    | Code::Cancelled
                    | Code::Aborted
                    | Code::ResourceExhausted
                    | Code::Internal
            )
        )
}

/// A stream that ended with this status is resumed, through another manager if need be: it broke
/// with its connection or its manager (killed, restarting, `h2 protocol error`), or the manager
/// dropped events this reader was too slow for (`DataLoss`), which the resumed stream replays.
fn resumable(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::DataLoss
    )
}

/// Resolves on Ctrl-C; never if the handler cannot be installed.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// `--timeout`: the end of the wait, and the duration given (for the message).
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    pub at: tokio::time::Instant,
    pub given: GoDuration,
}

impl Deadline {
    /// `given` from now; `None` without a timeout.
    pub fn after(given: Option<GoDuration>) -> Option<Deadline> {
        given.map(|given| Deadline { at: tokio::time::Instant::now() + given.as_std(), given })
    }
}

/// Resolves when `deadline` passes; never without one.
async fn expired(deadline: Option<Deadline>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.at).await,
        None => std::future::pending::<()>().await,
    }
}

/// The error of a wait that reached its `--timeout`: the count and a slot's error say why.
pub fn timeout_error(name: &str, given: GoDuration, last: Option<&Frame>) -> CliError {
    let progress = match last {
        Some(frame) => {
            let why = frame
                .slots
                .iter()
                .filter_map(|s| {
                    s.task.as_ref().filter(|t| !t.err.is_empty()).map(|t| format!("; {}: {}", s.name, t.err))
                })
                .next()
                .unwrap_or_default();
            format!(" ({} out of {} tasks running{why})", frame.running, frame.total)
        }
        None => String::new(),
    };
    CliError::Message(format!(
        "service {name} did not converge within --timeout {given}{progress}; it goes on converging in the cluster (see `shoal service ps {name}`)"
    ))
}

/// Waits until `service` (as the manager returned it after the change) has converged, drawing
/// progress unless `quiet`. Ends with the errors of [`Watch::outcome`], a "removed while
/// waiting" error, a "lost contact" error once no manager of `host` could be followed for
/// [`UNREACHABLE_GRACE`], or [`CliError::Interrupted`] on Ctrl-C (the cluster is left alone).
pub async fn wait_for_convergence(
    host: &str,
    service: &Service,
    operation: Operation,
    quiet: bool,
) -> Result<(), CliError> {
    wait_for_convergence_until(host, service, operation, quiet, None).await
}

/// [`wait_for_convergence`], ending with [`timeout_error`] once `deadline` has passed (the
/// cluster is left alone, as on Ctrl-C). A change that shows the service converged wins over a
/// deadline that passed meanwhile.
pub async fn wait_for_convergence_until(
    host: &str,
    service: &Service,
    operation: Operation,
    quiet: bool,
    deadline: Option<Deadline>,
) -> Result<(), CliError> {
    // A job converges by ending: its tasks run to completion, which may take as long as the
    // job's work. So the CLI does not wait for it; `service ls` shows its completions.
    if service.spec.mode.is_job() {
        return Ok(());
    }
    let mut progress = Progress { output: Output::new(quiet), watch: Watch::new(operation, service), last: None };
    let stop = interrupted();
    tokio::pin!(stop);
    let end = {
        let follow = follow(host, service, &mut progress);
        tokio::pin!(follow);
        tokio::select! {
            biased;
            result = &mut follow => Some(result),
            () = expired(deadline) => None,
            () = &mut stop => return Err(CliError::Interrupted),
        }
    };
    match (end, deadline) {
        (Some(result), _) => result,
        (None, Some(deadline)) => Err(timeout_error(&service.spec.name, deadline.given, progress.last.as_ref())),
        (None, None) => unreachable!("only a deadline expires"),
    }
}

/// What the display keeps between redraws.
struct Progress {
    output: Output,
    watch: Watch,
    /// The last frame drawn: the `--timeout` error tells its count and a slot's error.
    last: Option<Frame>,
}

impl Progress {
    /// Notes the service as the view has it (see [`Watch::observe`]); a service older than the
    /// one the command's change returned is not the one waited for.
    fn observe(&mut self, view: &View) {
        if let Some(service) = view.service().filter(|s| s.version >= self.watch.min_version) {
            self.watch.observe(service);
        }
    }

    /// Draws the view if it changed (or the last frame counts down) and says whether the wait is
    /// over.
    fn redraw(&mut self, view: &mut View, now_ms: u64) -> Option<Result<(), CliError>> {
        let changed = view.take_changed();
        if !changed && !self.last.as_ref().is_some_and(Frame::changes_with_time) {
            return None;
        }
        let service = view.service().filter(|s| s.version >= self.watch.min_version)?;
        let nodes = view.nodes();
        let frame = frame_on(service, view.tasks(), nodes.as_deref(), now_ms);
        self.output.show(&frame);
        let result = self.watch.outcome(service, &frame);
        self.last = Some(frame);
        result
    }
}

/// Why following the service stopped.
enum Stop {
    /// The wait is over, with this result.
    Done(Result<(), CliError>),
    /// Worth another try, through another manager if need be: the manager died, restarts or
    /// does not answer, a leader is being elected, or events were dropped.
    Broken(CliError),
}

fn removed(name: &str) -> Stop {
    Stop::Done(Err(CliError::Message(format!("service {name} was removed while waiting for it to converge"))))
}

/// A failed call: another try if the error is [`transient`], else the end of the wait.
fn stop_on(error: CliError) -> Stop {
    if transient(&error) { Stop::Broken(error) } else { Stop::Done(Err(error)) }
}

/// `call`, answered within [`READ_TIMEOUT`]; a manager that does not answer counts as lost.
async fn timed<T>(call: impl std::future::Future<Output = Result<T, CliError>>) -> Result<T, Stop> {
    match tokio::time::timeout(READ_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(stop_on(error)),
        Err(_) => Err(Stop::Broken(CliError::Message(format!("no answer within {}s", READ_TIMEOUT.as_secs())))),
    }
}

/// What one message of a stream means for the wait.
fn received(message: Result<Option<pb::WatchEvent>, tonic::Status>) -> Result<Event, Stop> {
    match message {
        Ok(Some(event)) => parse_event(&event.event_json).map_err(|m| Stop::Done(Err(CliError::Message(m)))),
        Ok(None) => Err(Stop::Broken(CliError::Message("the manager closed the stream".to_string()))),
        Err(status) if resumable(&status) => Err(Stop::Broken(status.into())),
        Err(status) => Err(Stop::Done(Err(status.into()))),
    }
}

/// The next message of `stream`; never while there is none.
async fn next_message(
    stream: &mut Option<tonic::Streaming<pb::WatchEvent>>,
) -> Result<Option<pb::WatchEvent>, tonic::Status> {
    match stream {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

/// What the service's stream carries: the service's changes and its tasks'.
fn service_types() -> Vec<String> {
    vec!["service".to_string(), "task".to_string()]
}

/// A connection to one manager following the service: the stream of its service's and tasks'
/// changes and, once the display needs the nodes, the stream of node changes.
struct Feed {
    client: Client,
    changes: tonic::Streaming<pb::WatchEvent>,
    nodes: Option<tonic::Streaming<pb::WatchEvent>>,
}

impl Feed {
    /// Connects (to the managers of `host` other than `away_from` first, when a stream through
    /// it just broke) and opens the service's stream. With a `view`, the stream resumes after
    /// the last change the view has (the manager replays the objects changed and removed since).
    /// Without one, or if the manager refuses to resume, everything is read again: the stream
    /// is opened first, replaying from `since` (the index of the command's change, which every
    /// later read includes), then the service and its tasks are read (one `ListTasks`), so no
    /// change between the read and the stream is lost; changes the read already has are
    /// ignored by the view.
    async fn open(
        host: &str,
        away_from: Option<&str>,
        service: &Service,
        since: u64,
        view: &mut Option<View>,
    ) -> Result<Feed, Stop> {
        let name = &service.spec.name;
        let gone = |stop: Stop| match stop {
            Stop::Done(Err(e)) if e.code() == Some(tonic::Code::NotFound) => removed(name),
            other => other,
        };
        let connecting = async {
            match away_from {
                Some(from) => Client::reconnect_streaming(host, from).await,
                None => Client::connect_streaming(host).await,
            }
        };
        let mut client = timed(connecting).await?;
        if let Some(current) = view.as_mut() {
            match timed(client.watch_from(service_types(), &service.id, current.resume_index())).await {
                Ok(changes) => {
                    current.touch();
                    let mut feed = Feed { client, changes, nodes: None };
                    if current.has_nodes() {
                        feed.watch_nodes(current, since).await?;
                    }
                    return Ok(feed);
                }
                Err(Stop::Done(Err(e))) if e.code() == Some(tonic::Code::NotFound) => return Err(removed(name)),
                // Refused for another reason: everything is read again below.
                Err(Stop::Done(Err(_))) => *view = None,
                Err(stop) => return Err(stop),
            }
        }
        let changes = timed(client.watch_from(service_types(), &service.id, since)).await.map_err(gone)?;
        let read = async {
            let Some(found) = client.find_service(&service.id).await? else { return Ok(None) };
            match client.list_tasks(&service.id, "").await {
                Ok(tasks) => Ok(Some((found, tasks))),
                Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let Some((found, tasks)) = timed(read).await? else { return Err(removed(name)) };
        let fresh = view.insert(View::new(found, tasks, since));
        let mut feed = Feed { client, changes, nodes: None };
        if fresh.needs_nodes() {
            feed.watch_nodes(fresh, since).await?;
        }
        Ok(feed)
    }

    /// Opens the stream of node changes, replaying from `since`, and reads the nodes (few: they
    /// are read again on every reconnect rather than resumed).
    async fn watch_nodes(&mut self, view: &mut View, since: u64) -> Result<(), Stop> {
        let stream = timed(self.client.watch_from(vec!["node".to_string()], "", since)).await?;
        let nodes = timed(self.client.list_nodes()).await?;
        view.set_nodes(nodes);
        self.nodes = Some(stream);
        Ok(())
    }

    /// Applies the streams' events to `view` and redraws it every [`REDRAW_INTERVAL`] (at once
    /// first) until the wait is over or a stream breaks.
    async fn follow(&mut self, view: &mut View, progress: &mut Progress, since: u64, name: &str) -> Stop {
        let mut redraw = tokio::time::interval(REDRAW_INTERVAL);
        redraw.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = self.changes.message() => {
                    let event = match received(message) {
                        Ok(event) => event,
                        Err(stop) => return stop,
                    };
                    let of_service = matches!(event.object, Changed::Service(_));
                    if view.apply(event) && of_service {
                        if view.service().is_none() {
                            return removed(name);
                        }
                        progress.observe(view);
                    }
                }
                message = next_message(&mut self.nodes) => match received(message) {
                    Ok(event) => {
                        view.apply_node(event);
                    }
                    Err(stop) => return stop,
                },
                _ = redraw.tick() => {
                    if !view.has_nodes() && view.changed() && view.needs_nodes()
                        && let Err(stop) = self.watch_nodes(view, since).await
                    {
                        return stop;
                    }
                    if let Some(result) = progress.redraw(view, timefmt::now_millis()) {
                        return Stop::Done(result);
                    }
                }
            }
        }
    }
}

/// Follows the service through the managers of `host` until the wait is over: a broken stream
/// is resumed through another manager (or the same one), for as long as one answers within
/// [`UNREACHABLE_GRACE`].
async fn follow(host: &str, service: &Service, progress: &mut Progress) -> Result<(), CliError> {
    let name = &service.spec.name;
    let since = service.version.max(1);
    let mut view: Option<View> = None;
    // The manager lost, and since when no other could be followed.
    let mut lost: Option<(String, tokio::time::Instant)> = None;
    let mut pause = RETRY_PAUSE;
    loop {
        let opened = Feed::open(host, lost.as_ref().map(|(addr, _)| addr.as_str()), service, since, &mut view).await;
        let error = match opened {
            Ok(mut feed) => {
                pause = RETRY_PAUSE;
                let view = view.as_mut().expect("an open feed has a view");
                progress.observe(view);
                match feed.follow(view, progress, since, name).await {
                    Stop::Done(result) => return result,
                    Stop::Broken(_) => {
                        // Straight back, through another manager first.
                        lost = Some((feed.client.addr().to_string(), tokio::time::Instant::now()));
                        continue;
                    }
                }
            }
            Err(Stop::Done(result)) => return result,
            Err(Stop::Broken(error)) => error,
        };
        let (addr, since_when) = lost.get_or_insert_with(|| (host.to_string(), tokio::time::Instant::now()));
        if since_when.elapsed() >= UNREACHABLE_GRACE {
            return Err(CliError::Message(format!(
                "lost contact with the manager at {addr} for more than {}s while waiting for service {name} to converge: {error}",
                UNREACHABLE_GRACE.as_secs()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
}

#[cfg(test)]
mod tests;
