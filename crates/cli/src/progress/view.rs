//! The service being waited for, its tasks and (when the display needs them) the nodes, as the
//! manager's change stream leaves them: read once, then kept up to date from `Watch` events.
//!
//! Every object is kept with the raft index of the change that left it so (an object's `version`
//! is the raft index of its last change, and an event's `index` is the raft index of the change
//! it carries). An event older than what is kept is ignored: replays after a reconnect and the
//! overlap between the first read and the stream (the stream starts before the read) bring
//! changes the view already has. Removed objects stay as tombstones, so an old event cannot bring
//! them back.

use std::collections::HashMap;

use serde::Deserialize;
use shoal_types::{Node, Service, Task};

use super::needs_nodes;

/// What happened to the object (the event's `action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Remove,
}

/// The changed object, as it is after the change (before it, for a removal).
#[derive(Clone, Debug, PartialEq)]
pub enum Changed {
    Service(Box<Service>),
    Task(Box<Task>),
    Node(Box<Node>),
    /// A type the wait does not follow (the cluster object).
    Other,
}

/// One event of the `Watch` stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The raft index of the change.
    pub index: u64,
    pub action: Action,
    pub id: String,
    pub object: Changed,
}

#[derive(Deserialize)]
struct RawEvent {
    index: u64,
    action: Action,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: String,
    object: serde_json::Value,
}

/// Decodes an event's JSON (`{"index", "action", "type", "id", "object", …}`).
pub fn parse_event(json: &str) -> Result<Event, String> {
    let raw: RawEvent =
        serde_json::from_str(json).map_err(|e| format!("cannot decode the event sent by the manager: {e}"))?;
    // The store's tagged form (`{"type": …, "object": {…}}`) is accepted too, as `events` does.
    let object = match raw.object {
        serde_json::Value::Object(mut map)
            if map.len() == 2 && map.contains_key("type") && map.get("object").is_some_and(|o| o.is_object()) =>
        {
            map.remove("object").unwrap_or_default()
        }
        other => other,
    };
    let decode_error = |e: serde_json::Error| format!("cannot decode the {} sent by the manager: {e}", raw.kind);
    let object = match raw.kind.as_str() {
        "service" => Changed::Service(Box::new(serde_json::from_value(object).map_err(decode_error)?)),
        "task" => Changed::Task(Box::new(serde_json::from_value(object).map_err(decode_error)?)),
        "node" => Changed::Node(Box::new(serde_json::from_value(object).map_err(decode_error)?)),
        _ => Changed::Other,
    };
    let id = match (&object, raw.id.is_empty()) {
        (Changed::Service(s), true) => s.id.clone(),
        (Changed::Task(t), true) => t.id.clone(),
        (Changed::Node(n), true) => n.id.clone(),
        _ => raw.id,
    };
    Ok(Event { index: raw.index, action: raw.action, id, object })
}

/// Objects by id, each with the index of the change that left it so; `None` for a removed one.
#[derive(Clone, Debug)]
struct Objects<T> {
    entries: HashMap<String, (u64, Option<T>)>,
}

impl<T> Default for Objects<T> {
    fn default() -> Self {
        Objects { entries: HashMap::new() }
    }
}

impl<T> Objects<T> {
    fn from_read(objects: impl IntoIterator<Item = (String, u64, T)>) -> Self {
        Objects { entries: objects.into_iter().map(|(id, index, object)| (id, (index, Some(object)))).collect() }
    }

    /// Keeps `object` (`None`: removed) as of `index`, unless what is kept is from a later change.
    /// An event at the same index is applied: one raft entry may change an object twice, and its
    /// events come in order.
    fn apply(&mut self, id: &str, index: u64, object: Option<T>) -> bool {
        match self.entries.get_mut(id) {
            Some((kept, _)) if *kept > index => false,
            Some(entry) => {
                *entry = (index, object);
                true
            }
            None => {
                self.entries.insert(id.to_string(), (index, object));
                true
            }
        }
    }

    fn live(&self) -> impl Iterator<Item = &T> {
        self.entries.values().filter_map(|(_, object)| object.as_ref())
    }
}

/// What the wait knows of the cluster.
#[derive(Clone, Debug)]
pub struct View {
    service_id: String,
    /// The service and the index it is kept at; `None` once removed.
    service: (u64, Option<Service>),
    tasks: Objects<Task>,
    /// Only once the display needs them ([`View::needs_nodes`]).
    nodes: Option<Objects<Node>>,
    /// The highest index seen on the service's stream (or where it started).
    last: u64,
    /// Something changed since the last [`View::take_changed`].
    changed: bool,
}

/// The index a service read or event stands for: a status-only write sets `status_version`.
fn service_index(service: &Service) -> u64 {
    service.version.max(service.status_version)
}

impl View {
    /// The service and its tasks as read; `since` is where the stream read alongside starts.
    pub fn new(service: Service, tasks: Vec<Task>, since: u64) -> View {
        let tasks = Objects::from_read(tasks.into_iter().map(|t| (t.id.clone(), t.version, t)));
        View {
            service_id: service.id.clone(),
            service: (service_index(&service), Some(service)),
            tasks,
            nodes: None,
            last: since,
            changed: true,
        }
    }

    /// The service, unless it was removed.
    pub fn service(&self) -> Option<&Service> {
        self.service.1.as_ref()
    }

    /// The service's tasks (those not removed), in no particular order.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.live().filter(|t| t.service_id == self.service_id)
    }

    /// The nodes, once read ([`View::set_nodes`]).
    pub fn nodes(&self) -> Option<Vec<Node>> {
        self.nodes.as_ref().map(|nodes| nodes.live().cloned().collect())
    }

    pub fn has_nodes(&self) -> bool {
        self.nodes.is_some()
    }

    /// Whether judging the tasks needs the nodes (see [`needs_nodes`]).
    pub fn needs_nodes(&self) -> bool {
        self.service().is_some_and(|service| needs_nodes(service, self.tasks()))
    }

    /// The nodes as read (replacing any kept).
    pub fn set_nodes(&mut self, nodes: Vec<Node>) {
        self.nodes = Some(Objects::from_read(nodes.into_iter().map(|n| (n.id.clone(), n.version, n))));
        self.changed = true;
    }

    /// Applies an event of the service's stream (its service and task changes). Returns whether
    /// the view changed; an event older than what the view holds changes nothing.
    pub fn apply(&mut self, event: Event) -> bool {
        self.last = self.last.max(event.index);
        let removed = event.action == Action::Remove;
        let changed = match event.object {
            Changed::Service(service) if service.id == self.service_id => {
                if self.service.0 > event.index {
                    false
                } else {
                    self.service = (event.index, (!removed).then_some(*service));
                    true
                }
            }
            Changed::Task(task) if task.service_id == self.service_id => {
                self.tasks.apply(&event.id, event.index, (!removed).then_some(*task))
            }
            _ => false,
        };
        self.changed |= changed;
        changed
    }

    /// Applies an event of the nodes' stream (nothing before the nodes were read).
    pub fn apply_node(&mut self, event: Event) -> bool {
        let removed = event.action == Action::Remove;
        let changed = match (event.object, self.nodes.as_mut()) {
            (Changed::Node(node), Some(nodes)) => nodes.apply(&event.id, event.index, (!removed).then_some(*node)),
            _ => false,
        };
        self.changed |= changed;
        changed
    }

    /// Where a new stream of the service's changes resumes: the events of the last index seen
    /// are replayed too, in case the stream broke between two changes of one raft entry
    /// (replaying what the view has changes nothing).
    pub fn resume_index(&self) -> u64 {
        self.last.saturating_sub(1).max(1)
    }

    /// Whether something changed since the last [`View::take_changed`].
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Whether something changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Marks the view changed (a new stream may have brought what it had already).
    pub fn touch(&mut self) {
        self.changed = true;
    }
}
