//! Passes over the located tree of one file before the schema walk: interpolation, turning
//! list-form `environment`/`labels` into mappings, and merging override files.

use crate::error::ComposeError;
use crate::interpolate::{InterpolationError, interpolate};
use crate::parse::join;
use crate::yaml::{Key, Kind, Val};

/// Interpolates every string value (keys are left alone, as in compose). `x-*` extension
/// subtrees are skipped: what they define is interpolated where it is merged or aliased in.
pub(crate) fn interpolate_tree(
    v: &mut Val,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    location: &dyn Fn(&Val) -> crate::error::Location,
    warnings: &mut Vec<String>,
) -> Result<(), ComposeError> {
    match &mut v.kind {
        Kind::Str(text) => {
            if !text.contains('$') {
                return Ok(());
            }
            match interpolate(text, lookup) {
                Ok(out) => {
                    for name in out.unset {
                        warnings.push(format!("{path}: variable {name} is not set; substituting an empty string"));
                    }
                    *text = out.value;
                }
                Err(err @ (InterpolationError::Required { .. } | InterpolationError::Invalid { .. })) => {
                    return Err(ComposeError::invalid(Some(location(v)), path, err.to_string()));
                }
            }
        }
        Kind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{path}[{i}]"), lookup, location, warnings)?;
            }
        }
        Kind::Map(entries) => {
            // Under environment/labels an `x-` key is a variable or label name, not an extension.
            let holds_names = path.ends_with(".environment") || path.ends_with(".labels");
            for (key, value) in entries.iter_mut() {
                // `x-change-cause` is read by shoal, so it is interpolated like any value.
                let read = path.is_empty() && key.name == "x-change-cause";
                if key.name.starts_with("x-") && !holds_names && !read {
                    continue;
                }
                interpolate_tree(value, &join(path, &key.name), lookup, location, warnings)?;
            }
        }
        Kind::Null | Kind::Bool(_) | Kind::Int(..) | Kind::Float(..) => {}
    }
    Ok(())
}

/// Rewrites list-form `environment`, `labels` and `deploy.labels` (`- KEY=VALUE`, `- KEY`) as
/// mappings, so that override files merge them key by key whichever form each file uses.
/// Lists holding anything but strings are left for the schema walk to report.
pub(crate) fn normalize_lists(root: &mut Val) {
    let Some(services) = root.get_mut("services").and_then(Val::as_map_mut) else {
        return;
    };
    for (_, service) in services.iter_mut() {
        for key in ["environment", "labels"] {
            if let Some(v) = service.get_mut(key) {
                list_to_map(v);
            }
        }
        if let Some(labels) = service.get_mut("deploy").and_then(|d| d.get_mut("labels")) {
            list_to_map(labels);
        }
    }
}

fn list_to_map(v: &mut Val) {
    let Kind::Seq(items) = &v.kind else { return };
    if !items.iter().all(|i| matches!(&i.kind, Kind::Str(s) if !s.starts_with('='))) {
        return;
    }
    let mut entries: Vec<(Key, Val)> = Vec::with_capacity(items.len());
    for item in items {
        let Kind::Str(text) = &item.kind else { return };
        let (name, value) = match text.split_once('=') {
            Some((k, v)) => (k.to_string(), Kind::Str(v.to_string())),
            None => (text.clone(), Kind::Null),
        };
        let value = Val::new(value, item.loc);
        match entries.iter_mut().find(|(k, _)| k.name == name) {
            Some(slot) => slot.1 = value,
            None => entries.push((Key { name, loc: item.loc }, value)),
        }
    }
    v.kind = Kind::Map(entries);
}

/// Overlays `over` onto `base`: mappings merge key by key (recursively); anything else — a
/// scalar, a sequence, or a value of another kind — replaces what was there. A null in the
/// override leaves a mapping as it was.
pub(crate) fn merge(base: &mut Val, over: Val) {
    let Val { kind, loc } = over;
    match (&mut base.kind, kind) {
        (Kind::Map(base_entries), Kind::Map(over_entries)) => {
            for (key, value) in over_entries {
                match base_entries.iter_mut().find(|(k, _)| k.name == key.name) {
                    Some(slot) => {
                        slot.0 = key;
                        merge(&mut slot.1, value);
                    }
                    None => base_entries.push((key, value)),
                }
            }
        }
        (Kind::Map(_), Kind::Null) => {}
        (_, kind) => *base = Val::new(kind, loc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    fn tree(text: &str) -> Val {
        parse(0, "t.yml", text).unwrap()
    }

    #[test]
    fn merge_overlays_maps_and_replaces_lists() {
        let mut base = tree("a:\n  b: 1\n  c: [1, 2]\n  d: {x: 1}\n");
        merge(&mut base, tree("a:\n  c: [3]\n  d: {y: 2}\n  e: new\n"));
        let expected = tree("a:\n  b: 1\n  c: [3]\n  d: {x: 1, y: 2}\n  e: new\n");
        assert_eq!(strip(&base), strip(&expected));
        let mut base = tree("a: {b: 1}\n");
        merge(&mut base, tree("a:\n"));
        assert_eq!(strip(&base), strip(&tree("a: {b: 1}\n")), "null leaves a mapping alone");
    }

    #[test]
    fn list_form_becomes_a_map() {
        let mut root = tree("services:\n  web:\n    environment: [A=1, B, C=x=y, A=2]\n");
        normalize_lists(&mut root);
        let expected = tree("services:\n  web:\n    environment: {A: \"2\", B: null, C: \"x=y\"}\n");
        assert_eq!(strip(&root), strip(&expected));
    }

    /// Drops locations so trees from different texts compare by content.
    fn strip(v: &Val) -> String {
        match &v.kind {
            Kind::Map(entries) => {
                let inner: Vec<String> = entries.iter().map(|(k, v)| format!("{}: {}", k.name, strip(v))).collect();
                format!("{{{}}}", inner.join(", "))
            }
            Kind::Seq(items) => format!("[{}]", items.iter().map(strip).collect::<Vec<_>>().join(", ")),
            other => format!("{other:?}"),
        }
    }
}
