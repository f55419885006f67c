//! `shoal events` arguments.

use clap::{Args, ValueEnum};

/// The object types a manager reports changes of.
pub const EVENT_TYPES: [&str; 4] = ["service", "task", "node", "cluster"];
/// The actions a change can be.
pub const EVENT_ACTIONS: [&str; 3] = ["create", "update", "remove"];

/// One `--filter KEY=VALUE` of `events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventFilter {
    /// `type=service|task|node|cluster` (repeatable: any of them).
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

/// `shoal events [--filter KEY=VALUE]... [--format text|json]`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct EventsArgs {
    /// Filter events: type=service|task|node|cluster, service=NAME, event=create|update|remove (repeatable)
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE", value_parser = event_filter)]
    pub filters: Vec<EventFilter>,
    /// Output format
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = EventFormat::Text)]
    pub format: EventFormat,
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
