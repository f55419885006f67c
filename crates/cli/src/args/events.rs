//! `shoal events` arguments.

use clap::{Args, ValueEnum};

/// The object types a manager reports changes of.
pub const EVENT_TYPES: [&str; 5] = ["service", "task", "node", "cluster", "route"];
/// The actions a change can be.
pub const EVENT_ACTIONS: [&str; 3] = ["create", "update", "remove"];

/// One `--filter KEY=VALUE` of `events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventFilter {
    /// `type=service|task|node|cluster|route` (repeatable: any of them).
    Type(String),
    /// `service=NAME`: only the events of this service and its tasks (at most one).
    Service(String),
    /// `event=create|update|remove` (repeatable: any of them).
    Action(String),
}

/// Parses `KEY=VALUE`.
pub fn event_filter(text: &str) -> Result<EventFilter, String> {
    let (key, value) =
        text.split_once('=').ok_or_else(|| "expected KEY=VALUE with KEY one of type, service, event".to_string())?;
    let value = value.trim();
    if value.is_empty() {
        return Err("the filter value must not be empty".to_string());
    }
    match key.trim().to_ascii_lowercase().as_str() {
        "type" => {
            let kind = value.to_ascii_lowercase();
            if EVENT_TYPES.contains(&kind.as_str()) {
                Ok(EventFilter::Type(kind))
            } else {
                Err(format!("unknown event type {value:?} (allowed: {})", EVENT_TYPES.join(", ")))
            }
        }
        "service" => Ok(EventFilter::Service(value.to_string())),
        "event" => {
            let action = value.to_ascii_lowercase();
            if EVENT_ACTIONS.contains(&action.as_str()) {
                Ok(EventFilter::Action(action))
            } else {
                Err(format!("unknown event {value:?} (allowed: {})", EVENT_ACTIONS.join(", ")))
            }
        }
        other => Err(format!("unknown filter key {other:?} (allowed: type, service, event)")),
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EventFormat {
    // One human-readable line per event.
    #[default]
    Text,
    // The event's JSON document, one per line.
    Json,
}

/// `--since`: the changes to replay before the live ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// After this raft index (the `index` of the events).
    Index(u64),
    /// At or after this time, Unix milliseconds.
    Time(u64),
}

/// `--since`: a raft index (digits), a Go duration ago (`10m`, `1h30m`), or a date or date-time
/// (`2024-03-01`, `2024-03-01T12:34:56Z`, UTC without a zone).
pub fn since(text: &str) -> Result<Since, String> {
    let text = text.trim();
    let allowed = "expected a raft index (the events' index, e.g. 1234), a duration ago (e.g. 10m, 1h30m) \
                   or a time (e.g. 2024-03-01T12:34:56Z)";
    if let Some(millis) = crate::timefmt::parse_timestamp(text) {
        return Ok(Since::Time(millis.max(1)));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u64>() {
            Ok(0) | Err(_) => Err(format!("{allowed}; an index is at least 1")),
            Ok(index) => Ok(Since::Index(index)),
        };
    }
    let ago = shoal_types::GoDuration::parse(text).map_err(|e| format!("{allowed}: {e}"))?;
    let ago = u64::try_from(ago.as_std().as_millis()).unwrap_or(u64::MAX);
    Ok(Since::Time(crate::timefmt::now_millis().saturating_sub(ago).max(1)))
}

/// `shoal events [--filter KEY=VALUE]... [--format text|json] [--since INDEX|DURATION]`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct EventsArgs {
    /// Filter events: type=service|task|node|cluster, service=NAME, event=create|update|remove (repeatable)
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE", value_parser = event_filter)]
    pub filters: Vec<EventFilter>,
    /// Output format
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = EventFormat::Text)]
    pub format: EventFormat,
    /// First replay the objects changed after this raft index (the events' index) or this long
    /// ago (10m), as update events, oldest first; objects removed meanwhile are not replayed
    #[arg(long, value_name = "INDEX|DURATION", value_parser = since)]
    pub since: Option<Since>,
}

/// What to ask the manager for, and what to filter out here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventSelection {
    /// Object types (empty: all).
    pub types: Vec<String>,
    /// Service id or name (empty: all).
    pub service: String,
    /// Actions (empty: all); the manager does not filter by action, so the CLI does.
    pub actions: Vec<String>,
}

impl EventsArgs {
    pub fn selection(&self) -> Result<EventSelection, String> {
        let mut selection = EventSelection::default();
        for filter in &self.filters {
            match filter {
                EventFilter::Type(t) if !selection.types.contains(t) => selection.types.push(t.clone()),
                EventFilter::Action(a) if !selection.actions.contains(a) => selection.actions.push(a.clone()),
                EventFilter::Service(s) => {
                    if !selection.service.is_empty() && selection.service != *s {
                        return Err("only one service filter may be given".to_string());
                    }
                    selection.service = s.clone();
                }
                _ => {}
            }
        }
        Ok(selection)
    }

    /// Flag combinations clap cannot express; reported as usage errors (exit code 2).
    pub fn check_usage(&self) -> Result<(), String> {
        self.selection().map(|_| ())
    }
}
