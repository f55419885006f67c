//! `shoal events`: one line per change, like `docker events`.
//!
//! The event document is read loosely (as JSON values, not typed objects) so a manager that adds
//! fields never breaks the stream.

use serde_json::Value;

use crate::timefmt::format_timestamp;

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

fn path<'a>(value: &'a Value, keys: &[&str]) -> &'a str {
    let mut current = value;
    for key in keys {
        match current.get(key) {
            Some(next) => current = next,
            None => return "",
        }
    }
    current.as_str().unwrap_or("")
}

/// The changed object. Accepts it bare or wrapped as `{"type": …, "object": {…}}` (the store's
/// tagged form).
fn object_of(event: &Value) -> &Value {
    let object = event.get("object").unwrap_or(&Value::Null);
    match object.as_object() {
        Some(map) if map.len() == 2 && map.contains_key("type") && map.get("object").is_some_and(Value::is_object) => {
            &object["object"]
        }
        _ => object,
    }
}

/// The `(key=value, …)` attributes shown for an object of `kind`.
fn attributes(kind: &str, event: &Value, object: &Value) -> Vec<(&'static str, String)> {
    match kind {
        "task" => {
            let service = [text(object, "service_name"), text(event, "service"), text(object, "service_id")]
                .into_iter()
                .find(|s| !s.is_empty())
                .unwrap_or("");
            vec![
                ("service", service.to_string()),
                ("state", path(object, &["status", "state"]).to_string()),
                ("desired", text(object, "desired_state").to_string()),
            ]
        }
        "service" => {
            let mut attrs = vec![("name", path(object, &["spec", "name"]).to_string())];
            let update_state = path(object, &["update_status", "state"]);
            if !update_state.is_empty() {
                attrs.push(("update_state", update_state.to_string()));
            }
            attrs
        }
        "node" => vec![
            ("hostname", path(object, &["description", "hostname"]).to_string()),
            ("state", path(object, &["status", "state"]).to_string()),
            ("availability", path(object, &["spec", "availability"]).to_string()),
        ],
        _ => Vec::new(),
    }
}

/// `2026-11-22T03:45:01.123Z task update <id> (service=web, state=running, desired=running)`.
/// A line that is not an event document is returned as it is.
pub fn event_line(json: &str) -> String {
    let Ok(event) = serde_json::from_str::<Value>(json) else {
        return json.trim_end().to_string();
    };
    if !event.is_object() {
        return json.trim_end().to_string();
    }
    let time = event.get("time").and_then(Value::as_u64).map(format_timestamp).unwrap_or_default();
    let kind = text(&event, "type");
    let action = text(&event, "action");
    let object = object_of(&event);
    let id = [text(&event, "id"), text(object, "id")].into_iter().find(|s| !s.is_empty()).unwrap_or("");
    let mut line =
        [time.as_str(), kind, action, id].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    let attrs = attributes(kind, &event, object);
    if !attrs.is_empty() {
        let attrs: Vec<String> = attrs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        line.push_str(&format!(" ({})", attrs.join(", ")));
    }
    line
}

/// The event's action (`create`, `update`, `remove`), for filtering; empty if unreadable.
pub fn event_action(json: &str) -> String {
    serde_json::from_str::<Value>(json).map(|event| text(&event, "action").to_string()).unwrap_or_default()
}

/// The event's raft index (where `events` resumes after a reconnect); `None` if unreadable.
pub fn event_index(json: &str) -> Option<u64> {
    serde_json::from_str::<Value>(json).ok()?.get("index")?.as_u64()
}
