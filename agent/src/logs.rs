//! The agent's side of `shoal service logs`: the leader sends log reads over the session's
//! `LogSubscriptions` stream; each read is answered in its own `PublishLogs` call, from the
//! containers of this node's tasks it selects.
//!
//! Every queue on the way is bounded: when the reader is slow the call's stream stops taking
//! messages, the readers here wait on it, and the engine's log stream is not read further.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use shoal_executor::{LogOptions, LogStream};
use shoal_proto::v1::dispatcher_client::DispatcherClient;
use shoal_proto::v1::{LogLine, LogSubscription, LogSubscriptionsRequest, PublishLogsMessage};
use shoal_types::{Task, TaskState};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tonic::transport::Channel;

use crate::Agent;

/// Lines sent in one message at most, and their bytes (the leader holds a few messages per
/// reader).
const LINES_PER_MESSAGE: usize = 256;
const BYTES_PER_MESSAGE: usize = 256 << 10;
/// Messages of one read waiting for the leader.
const PUBLISH_QUEUE: usize = 8;

/// Serves the leader's log reads for one session; returns why the stream ended.
///
/// Lines travel on a connection of their own: a reader that pauses holds its stream's
/// flow-control window, and the session's heartbeats and statuses must not wait behind it.
pub(crate) async fn serve(agent: Arc<Agent>, addr: String, session_id: String) -> String {
    let mut client = match agent.connect(&addr).await {
        Ok(channel) => DispatcherClient::new(channel),
        Err(e) => return format!("cannot open the log connection to {addr}: {e}"),
    };
    let request = LogSubscriptionsRequest { node_id: agent.node_id.clone(), session_id: session_id.clone() };
    let mut stream = match client.log_subscriptions(request).await {
        Ok(response) => response.into_inner(),
        // A leader of an older version: no logs, but the session is fine.
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            tracing::warn!("the leader does not serve logs; `service logs` will not show this node's");
            return std::future::pending().await;
        }
        Err(status) => return format!("log subscriptions: {}", status.message()),
    };
    // Every read in progress; dropping the set (the session ended) stops them all.
    let mut reads = JoinSet::new();
    let mut open: HashMap<String, AbortHandle> = HashMap::new();
    loop {
        let subscription = match stream.message().await {
            Ok(Some(subscription)) => subscription,
            Ok(None) => return "the leader closed the log subscription stream".to_string(),
            Err(status) => return format!("log subscriptions: {}", status.message()),
        };
        while reads.try_join_next().is_some() {}
        open.retain(|_, handle| !handle.is_finished());
        if subscription.close {
            if let Some(handle) = open.remove(&subscription.id) {
                handle.abort();
            }
            continue;
        }
        tracing::debug!(read = %subscription.id, follow = subscription.follow, "log read");
        let id = subscription.id.clone();
        let handle = reads.spawn(publish(agent.clone(), client.clone(), session_id.clone(), subscription));
        if let Some(earlier) = open.insert(id, handle) {
            earlier.abort();
        }
    }
}

/// Answers one read in one `PublishLogs` call until its lines are all sent (without follow) or
/// the leader ends the call (the reader went away).
async fn publish(agent: Arc<Agent>, mut client: DispatcherClient<Channel>, session_id: String, read: LogSubscription) {
    let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
    let first = PublishLogsMessage {
        subscription_id: read.id.clone(),
        node_id: agent.node_id.clone(),
        session_id,
        ..PublishLogsMessage::default()
    };
    if tx.send(first).await.is_err() {
        return;
    }
    let call = client.publish_logs(tokio_stream::wrappers::ReceiverStream::new(rx));
    tokio::pin!(call);
    let reading = read_tasks(agent, read.clone(), tx);
    let result = tokio::select! {
        // The leader ended the call first: the reader went away, or this read is unknown.
        result = &mut call => result,
        () = reading => call.await,
    };
    if let Err(status) = result {
        tracing::debug!(read = %read.id, error = status.message(), "log read ended by the leader");
    }
}

/// Reads the containers of the tasks `read` selects into `tx`: those there are now, and with
/// follow, those that start later, each once. Without follow, ends with a `close` message.
async fn read_tasks(agent: Arc<Agent>, read: LogSubscription, tx: mpsc::Sender<PublishLogsMessage>) {
    let mut since = read.since_unix_nanos.max(0);
    if read.from_now {
        // By this node's clock, which the engine stamps lines with.
        since = since.max(now_nanos());
    }
    let options = LogOptions { follow: read.follow, tail: u64::try_from(read.tail).ok(), since_unix_nanos: since };
    let mut changed = agent.reporter.changed.subscribe();
    // The last line's time read from each container, by the task id it carries: a task
    // restarted in place runs in an earlier task's container, whose old lines were sent already.
    let last_read: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let mut started: HashSet<String> = HashSet::new();
    // Containers being read: one two tasks share (a task restarted another's) is read once at
    // a time, and without follow once.
    let reading: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut containers: HashSet<String> = HashSet::new();
    let mut readers = JoinSet::new();
    // `--tail` is for the tasks there are when the read opens; a task that starts later is
    // shown from its first line (all its lines are new).
    let mut opening = true;
    loop {
        changed.mark_unchanged();
        for task in agent.tasks_selected(&read) {
            if started.contains(&task.id) {
                continue;
            }
            // A container is followed once it has started; one that never did has nothing to say.
            if read.follow && agent.reporter.state(&task.id).is_none_or(|s| s < TaskState::Running) {
                continue;
            }
            let container = task.container_task().to_string();
            if reading.lock().contains(&container) {
                // Its other task's reader is still on it; this one starts where that one ends.
                continue;
            }
            started.insert(task.id.clone());
            if !read.follow && !containers.insert(container.clone()) {
                continue;
            }
            let mut options = options;
            if !opening {
                options.tail = None;
            }
            if let Some(last) = last_read.lock().get(&container) {
                options.since_unix_nanos = options.since_unix_nanos.max(last + 1);
            }
            let mut lines = agent.executor.logs(&container, options).await;
            if matches!(lines, Ok(None)) && container != task.id {
                // The container it was to restart is gone: the task made its own.
                lines = agent.executor.logs(&task.id, options).await;
            }
            reading.lock().insert(container.clone());
            let reader =
                Reader { read: read.id.clone(), task_id: task.id.clone(), container, last_read: last_read.clone() };
            readers.spawn(reader.send(lines, tx.clone(), reading.clone()));
        }
        if !read.follow {
            break;
        }
        opening = false;
        tokio::select! {
            changed = changed.changed() => if changed.is_err() { return },
            Some(_) = readers.join_next() => {}
        }
    }
    while readers.join_next().await.is_some() {}
    let close = PublishLogsMessage { subscription_id: read.id, close: true, ..PublishLogsMessage::default() };
    let _ = tx.send(close).await;
}

/// One container's lines, sent as one task's.
struct Reader {
    read: String,
    task_id: String,
    container: String,
    /// The last line's time read from each container (see `read_tasks`).
    last_read: Arc<Mutex<HashMap<String, i64>>>,
}

type Lines = Result<Option<LogStream>, shoal_executor::ExecError>;

impl Reader {
    /// Sends the lines, then marks the container as no longer read.
    async fn send(self, lines: Lines, tx: mpsc::Sender<PublishLogsMessage>, reading: Arc<Mutex<HashSet<String>>>) {
        self.send_lines(lines, &tx).await;
        reading.lock().remove(&self.container);
    }

    /// Sends the lines in batches of what is ready, up to a message's lines and bytes.
    async fn send_lines(&self, lines: Lines, tx: &mpsc::Sender<PublishLogsMessage>) {
        let task_id = &self.task_id;
        let mut lines = match lines {
            Ok(Some(lines)) => lines,
            // The task never had a container here (rejected, or removed since).
            Ok(None) => return,
            Err(e) => {
                let error = format!("the logs of task {task_id} cannot be read: {e}");
                let message = PublishLogsMessage { subscription_id: self.read.clone(), error, ..Default::default() };
                let _ = tx.send(message).await;
                return;
            }
        };
        while let Some(first) = lines.next().await {
            let mut message = PublishLogsMessage { subscription_id: self.read.clone(), ..Default::default() };
            let mut bytes = 0usize;
            let mut next = Some(first);
            while let Some(entry) = next.take() {
                match entry {
                    Ok(entry) => {
                        bytes += entry.data.len();
                        let stream = if entry.stderr {
                            shoal_proto::v1::LogStream::Stderr
                        } else {
                            shoal_proto::v1::LogStream::Stdout
                        };
                        message.lines.push(LogLine {
                            task_id: task_id.clone(),
                            stream: stream as i32,
                            time_unix_nanos: entry.time_unix_nanos,
                            data: entry.data,
                        });
                    }
                    Err(e) => message.error = format!("the logs of task {task_id} broke off: {e}"),
                }
                if message.lines.len() >= LINES_PER_MESSAGE || bytes >= BYTES_PER_MESSAGE {
                    break;
                }
                next = lines.next().now_or_never().flatten();
            }
            if let Some(last) = message.lines.last() {
                let mut last_read = self.last_read.lock();
                let seen = last_read.entry(self.container.clone()).or_insert(last.time_unix_nanos);
                *seen = (*seen).max(last.time_unix_nanos);
            }
            if tx.send(message).await.is_err() {
                return;
            }
        }
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl Agent {
    /// This node's tasks a read selects (of its service, or named by id), by slot, the newest
    /// first within a slot: a container two tasks share is read as the newer one's.
    fn tasks_selected(&self, read: &LogSubscription) -> Vec<Task> {
        let runners = self.runners.lock();
        let mut tasks: Vec<Task> = runners
            .values()
            .map(|runner| runner.task.borrow())
            .filter(|task| {
                (!read.service_id.is_empty() && task.service_id == read.service_id) || read.task_ids.contains(&task.id)
            })
            .map(|task| task.clone())
            .collect();
        tasks.sort_by(|a, b| a.slot.cmp(&b.slot).then(b.created_at.cmp(&a.created_at)).then(a.id.cmp(&b.id)));
        tasks
    }
}
