//! `--format` of the list commands: `table` (the default), `json`, or a Go-template-style text
//! such as `{{.Name}}\t{{.Replicas}}`, with a `table` prefix for a header row, as docker has it.
//! Only `{{.Field}}` actions and literal text are understood (with docker's `\t` and `\n`
//! escapes); the fields a command offers are checked when the flag is parsed.

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// A field name, without the leading dot (`Name`).
    Field(String),
}

/// A parsed `--format` template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// `table …`: a header row first, and `\t`-separated cells aligned in columns.
    pub table: bool,
    pub parts: Vec<Part>,
}

/// What a list command prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ListOutput {
    #[default]
    Table,
    Json,
    Template(Template),
}

impl ListOutput {
    pub fn is_json(&self) -> bool {
        *self == ListOutput::Json
    }
}

/// The template fields of `service ls`, each with its column header.
pub const SERVICE_FIELDS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Mode", "MODE"),
    ("Replicas", "REPLICAS"),
    ("Image", "IMAGE"),
    ("Ports", "PORTS"),
];

/// The template fields of `node ls`, each with its column header.
pub const NODE_FIELDS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("Hostname", "HOSTNAME"),
    ("Status", "STATUS"),
    ("Availability", "AVAILABILITY"),
    ("ManagerStatus", "MANAGER STATUS"),
    ("Address", "ADDRESS"),
];

/// The template fields of `stack ls`, each with its column header.
pub const STACK_FIELDS: &[(&str, &str)] = &[("Name", "NAME"), ("Services", "SERVICES")];

/// The template fields of `service ps`, `node ps` and `stack ps`, each with its column header.
pub const TASK_FIELDS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Image", "IMAGE"),
    ("Node", "NODE"),
    ("DesiredState", "DESIRED STATE"),
    ("CurrentState", "CURRENT STATE"),
    ("Error", "ERROR"),
    ("Ports", "PORTS"),
];

/// Parses `--format` for a command whose template may use `fields`.
pub fn parse_list_output(text: &str, fields: &[(&str, &str)]) -> Result<ListOutput, String> {
    let trimmed = text.trim();
    match trimmed {
        "" | "table" => return Ok(ListOutput::Table),
        "json" => return Ok(ListOutput::Json),
        _ => {}
    }
    // As docker: any format that starts with `table` is one, the rest (trimmed) its template.
    let (table, body) = match trimmed.strip_prefix("table") {
        Some(rest) => (true, rest.trim()),
        None => (false, text),
    };
    let parts = parse_template(body, fields)?;
    // Docker would print such a text once per row; here it is taken for a mistyped format name.
    if !parts.iter().any(|p| matches!(p, Part::Field(_))) {
        return Err(format!(
            "expected table, json or a template of {{{{.Field}}}}s such as '{{{{.{}}}}}' (fields: {})",
            fields.first().map(|(f, _)| *f).unwrap_or("ID"),
            field_list(fields)
        ));
    }
    Ok(ListOutput::Template(Template { table, parts }))
}

fn field_list(fields: &[(&str, &str)]) -> String {
    fields.iter().map(|(name, _)| format!(".{name}")).collect::<Vec<_>>().join(", ")
}

fn parse_template(text: &str, fields: &[(&str, &str)]) -> Result<Vec<Part>, String> {
    // Docker replaces these two escapes before it parses the template.
    let text = text.replace("\\t", "\t").replace("\\n", "\n");
    let mut parts = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("unclosed {{{{ in template {text:?}"))?;
        let action = after[..end].trim();
        let name = action.strip_prefix('.').filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric()));
        let Some(name) = name else {
            return Err(format!(
                "unsupported template action {{{{{action}}}}}: only {{{{.Field}}}} is understood (fields: {})",
                field_list(fields)
            ));
        };
        if !fields.iter().any(|(f, _)| *f == name) {
            return Err(format!("unknown template field .{name} (fields: {})", field_list(fields)));
        }
        parts.push(Part::Field(name.to_string()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

/// `--format` of `service ls`.
pub fn service_ls_format(text: &str) -> Result<ListOutput, String> {
    parse_list_output(text, SERVICE_FIELDS)
}

/// `--format` of `node ls`.
pub fn node_ls_format(text: &str) -> Result<ListOutput, String> {
    parse_list_output(text, NODE_FIELDS)
}

/// `--format` of `service ps`, `node ps` and `stack ps`.
pub fn task_format(text: &str) -> Result<ListOutput, String> {
    parse_list_output(text, TASK_FIELDS)
}

/// The clap parser of a `--format` whose templates may use `fields`. A refusal is an invalid
/// value (as an unknown `--format` name was when only table and json existed).
#[derive(Clone, Copy, Debug)]
pub struct FormatParser(pub &'static [(&'static str, &'static str)]);

impl clap::builder::TypedValueParser for FormatParser {
    type Value = ListOutput;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<ListOutput, clap::Error> {
        let text = value.to_string_lossy();
        parse_list_output(&text, self.0).map_err(|message| {
            let arg = arg.map(ToString::to_string).unwrap_or_else(|| "--format".to_string());
            cmd.clone()
                .error(clap::error::ErrorKind::InvalidValue, format!("invalid value '{text}' for '{arg}': {message}"))
        })
    }
}
