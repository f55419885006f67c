//! Compose-like stack files, the subset Docker Swarm's `docker stack deploy` honours: parsing,
//! variable interpolation, validation and conversion to shoal [`ServiceSpec`]s.
//!
//! ```
//! use std::collections::BTreeMap;
//!
//! let yaml = "services:\n  web:\n    image: shoal/busybox:${TAG:-1}\n    deploy:\n      replicas: 2\n";
//! let loaded = shoal_compose::load_str("app", &[("stack.yml".into(), yaml.into())], &BTreeMap::new(), None)?;
//! let web = &loaded.services["web"];
//! assert_eq!(web.name, "app_web");
//! assert_eq!(web.task.container.image, "shoal/busybox:1");
//! assert_eq!(web.replicas(), Some(2));
//! # Ok::<(), shoal_compose::ComposeError>(())
//! ```
//!
//! # Pipeline
//! 1. Each file is parsed with serde-saphyr into a located tree (anchors, aliases and `<<` merge
//!    keys expanded; duplicate keys are errors).
//! 2. String values are interpolated (see [`interpolate`]) from the given environment, then from
//!    the `.env` file beside the first stack file (the environment wins). `x-*` subtrees are not
//!    interpolated in place: their content is, wherever it is merged or aliased in. The one
//!    extension shoal reads, the top-level `x-change-cause`, is interpolated in place.
//! 3. List-form `environment`, `labels` and `deploy.labels` become mappings, then the files are
//!    merged in order: **mappings merge key by key (recursively), everything else — scalars and
//!    lists such as `ports`, `command`, `env_file` or `placement.constraints` — is replaced
//!    whole by the later file.** So `environment`/`labels` merge per variable/label whichever form
//!    each file uses, while a later `ports:` list replaces the earlier one.
//! 4. The merged tree is checked against the Swarm subset and normalised into a [`StackFile`]:
//!    unsupported compose keys become warnings, unknown keys and bad values errors.
//! 5. Each service becomes a [`ServiceSpec`] named `<stack>_<service>` that must pass
//!    [`ServiceSpec::validate`]. Across services: names must stay distinct case-insensitively,
//!    an ingress-published port may be used once, and `dnsrr` cannot have ingress ports.
//!
//! # Supported keys
//! - top level: `version` (kept), `name` (accepted; the stack name comes from the caller),
//!   `services`, `x-*` (ignored).
//! - service: `image` (required), `command` and `entrypoint` (string, split like a shell, or
//!   list), `environment` and `labels` (mapping or `KEY=VALUE` list; a bare `KEY` in
//!   `environment` takes the variable from the environment/`.env` or is omitted), `env_file`
//!   (path, list of paths or `{path, required}`), `ports` (`"80"`, `"8080:80"`, `"8080:80/udp"`,
//!   `"[ip:]9000-9001:80-81"`, `80`, or `{target, published, protocol, mode}`), `healthcheck`
//!   (`test` string or list, `interval`, `timeout`, `retries`, `start_period`, `disable`),
//!   `stop_grace_period`, `stop_signal`, `hostname`, `user`, `working_dir`, `restart` (legacy,
//!   used only without `deploy.restart_policy`), `deploy`.
//! - deploy: `mode` (replicated|global|replicated-job|global-job), `replicas`, `labels` (service
//!   labels), `update_config`/`rollback_config` (`parallelism` 1 when omitted, `delay`,
//!   `failure_action`, `monitor` (0 ⇒ 5s), `max_failure_ratio`, `order`; refused with a job
//!   mode, as Swarm refuses them for jobs), `restart_policy` (`condition`, `delay`,
//!   `max_attempts`, `window`), `placement` (`constraints`, `preferences: [{spread: …}]`,
//!   `max_replicas_per_node`), `resources` (`limits`/`reservations`: `cpus` string or number,
//!   `memory` size or bytes, `pids`), `endpoint_mode` (vip|dnsrr).
//!
//! `depends_on` (a list, or a mapping whose conditions are not used) orders an atomic deploy's
//! rollout (`x-atomic: true` or `stack deploy --atomic`); a cycle or an unknown service is an error.
//!
//! `networks` at the top level (`name`, `external`, `labels`; `driver` may only be `overlay`,
//! `attachable` is accepted) and in a service (a list, or a mapping whose options such as
//! `aliases` are ignored with a warning). A service without `networks:` is on the stack's
//! `default` network, `<stack>_default`, as with `docker stack deploy`; the services of one
//! network reach each other by name.
//!
//! Other compose keys (`build`, `logging`, `healthcheck.start_interval`, `ports[].host_ip`, a
//! short port's host IP, `reservations.generic_resources`, …) produce a warning such as
//! `services.web.logging: not supported by shoal; ignored`. A key compose does not know is an
//! error: `stack.yml:3:5: services.web.imagee: unknown key (did you mean "image"?)`.
//!
//! # Errors
//! [`ComposeError`]'s messages read `file:line:column: key.path: problem`, e.g.
//! `stack.yml:4:17: services.web.deploy.replicas: invalid type: string "three", expected an
//! integer`. Values that are strings after interpolation are accepted wherever a number or
//! boolean is expected if they parse as one (`replicas: ${N:-2}`).
#![forbid(unsafe_code)]

mod convert;
mod envfile;
mod error;
pub mod interpolate;
mod model;
mod parse;
mod shell;
mod tree;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use shoal_types::{PublishMode, ServiceSpec, validate_name};

pub use convert::{NAMESPACE_LABEL, route_specs};
pub use envfile::{EnvFileError, parse_env_file};
pub use error::{ComposeError, Location};
pub use model::{
    DataDef, Deploy, DeployMode, DeployPlacement, DeployResources, ResourceAmounts, Service, SpreadPreference,
    StackFile,
};
pub use shell::split as split_command;

/// A loaded stack.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The normalised stack model (merged, interpolated, defaults applied).
    pub stack: StackFile,
    /// The specs to deploy, keyed by the service's short name (`web`, not `app_web`).
    pub services: BTreeMap<String, ServiceSpec>,
    /// Things that were ignored or substituted, one sentence each, e.g.
    /// `services.web.volumes: not supported by shoal; ignored`.
    pub warnings: Vec<String>,
    /// `stack` as YAML, in a fixed key order (what `docker stack config` prints).
    pub normalized_yaml: String,
}

/// Checks a stack name the way docker does (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`) and that the service
/// names it produces (`<stack>_<service>`) can pass [`validate_name`]: no `.`, and room for at
/// least a one-character service name within 63 characters.
pub fn validate_stack_name(name: &str) -> Result<(), ComposeError> {
    let fail = |reason: &str| Err(ComposeError::StackName { name: name.to_string(), reason: reason.to_string() });
    let docker_ok = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !docker_ok {
        return fail("use letters, digits, '_', '.' and '-', starting with a letter or digit");
    }
    if name.contains('.') {
        return fail(
            "'.' is not allowed: service names (<stack>_<service>) may only contain letters, digits, '-' and '_'",
        );
    }
    if validate_name("name", &format!("{name}_x")).is_err() {
        return fail("too long: service names (<stack>_<service>) must fit in 63 characters");
    }
    Ok(())
}

/// The file name `-` stands for standard input (as in `docker stack deploy -c -`).
pub const STDIN_FILE: &str = "-";

/// How a stack file read from standard input is named in messages.
pub const STDIN_NAME: &str = "<stdin>";

/// Loads a stack from files: reads them and the `.env` file beside the first one (if any),
/// and any `env_file` they name (relative to the first file's directory). A file named `-` is
/// read from standard input; as in docker, the current directory then stands for its directory.
pub fn load(stack_name: &str, files: &[PathBuf], env: &BTreeMap<String, String>) -> Result<Loaded, ComposeError> {
    load_from(stack_name, files, env, &mut || std::io::read_to_string(io::stdin()))
}

/// Like [`load`], with `read_stdin` answering for the file `-` (at most one may be given:
/// standard input can be read only once).
pub fn load_from(
    stack_name: &str,
    files: &[PathBuf],
    env: &BTreeMap<String, String>,
    read_stdin: &mut dyn FnMut() -> io::Result<String>,
) -> Result<Loaded, ComposeError> {
    validate_stack_name(stack_name)?;
    let first = files.first().ok_or(ComposeError::NoFiles)?;
    if files.iter().filter(|p| p.as_os_str() == STDIN_FILE).count() > 1 {
        return Err(ComposeError::StdinTwice);
    }
    let mut sources = Vec::with_capacity(files.len());
    for path in files {
        if path.as_os_str() == STDIN_FILE {
            let text = read_stdin().map_err(|source| ComposeError::Read { path: PathBuf::from(STDIN_NAME), source })?;
            sources.push((STDIN_NAME.to_string(), text));
            continue;
        }
        let text = std::fs::read_to_string(path).map_err(|source| ComposeError::Read { path: path.clone(), source })?;
        sources.push((path.display().to_string(), text));
    }
    // `<stdin>` has the empty parent, so `.env` and `env_file`s are looked up in the current
    // directory.
    let first = if first.as_os_str() == STDIN_FILE { Path::new(STDIN_NAME) } else { first.as_path() };
    let dotenv_path = first.parent().unwrap_or(Path::new("")).join(".env");
    let dotenv = match std::fs::read_to_string(&dotenv_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(ComposeError::Read { path: dotenv_path, source }),
    };
    load_with(stack_name, &sources, env, dotenv.as_deref(), &mut |path: &Path| std::fs::read_to_string(path))
}

/// Loads a stack from in-memory `(file name, content)` sources; no IO. `dotenv` is the content
/// of the `.env` file, if any. `env_file` keys cannot be read (they are reported as errors);
/// use [`load_with`] to provide them.
pub fn load_str(
    stack_name: &str,
    sources: &[(String, String)],
    env: &BTreeMap<String, String>,
    dotenv: Option<&str>,
) -> Result<Loaded, ComposeError> {
    load_with(stack_name, sources, env, dotenv, &mut |path: &Path| {
        Err(io::Error::new(io::ErrorKind::Unsupported, format!("{} was not provided", path.display())))
    })
}

/// Like [`load_str`], with `read_file` answering for the `env_file` paths the stack names
/// (given relative to the first source's directory, e.g. `conf/web.env`).
pub fn load_with(
    stack_name: &str,
    sources: &[(String, String)],
    env: &BTreeMap<String, String>,
    dotenv: Option<&str>,
    read_file: &mut dyn FnMut(&Path) -> io::Result<String>,
) -> Result<Loaded, ComposeError> {
    validate_stack_name(stack_name)?;
    let Some((first_name, _)) = sources.first() else { return Err(ComposeError::NoFiles) };
    let base_dir = Path::new(first_name).parent().unwrap_or(Path::new("")).to_path_buf();
    let names: Vec<String> = sources.iter().map(|(name, _)| name.clone()).collect();

    let mut dotenv_vars = BTreeMap::new();
    if let Some(text) = dotenv {
        let pairs = parse_env_file(text).map_err(|e| ComposeError::Syntax {
            location: Location { file: base_dir.join(".env").display().to_string(), line: e.line as u64, column: 1 },
            message: e.message,
        })?;
        dotenv_vars.extend(pairs.into_iter().filter_map(|(k, v)| Some((k, v?))));
    }
    let lookup = |name: &str| env.get(name).or_else(|| dotenv_vars.get(name)).cloned();
    let location_of = |loc: yaml::Loc| Location {
        file: names.get(loc.file).cloned().unwrap_or_default(),
        line: loc.line,
        column: loc.column,
    };

    let mut warnings = Vec::new();
    // The warnings (an unset variable) explain many errors (an image left as `busybox:`), so an
    // error that follows them carries them along.
    type Body = (StackFile, BTreeMap<String, ServiceSpec>, String);
    let body = || -> Result<Body, ComposeError> {
        let mut merged: Option<yaml::Val> = None;
        for (index, (name, text)) in sources.iter().enumerate() {
            let mut root = yaml::parse(index, name, text)?;
            match root.kind {
                yaml::Kind::Map(_) | yaml::Kind::Null => {}
                _ => {
                    return Err(ComposeError::Syntax {
                        location: location_of(root.loc),
                        message: format!(
                            "the top level must be a mapping with a services key, not a {}",
                            root.describe()
                        ),
                    });
                }
            }
            tree::interpolate_tree(&mut root, "", &lookup, &|v| location_of(v.loc), &mut warnings)?;
            tree::normalize_lists(&mut root);
            match &mut merged {
                None => merged = Some(root),
                Some(base) => tree::merge(base, root),
            }
        }
        let merged = merged.ok_or(ComposeError::NoFiles)?;

        let mut walker = parse::Walker {
            files: &names,
            lookup: &lookup,
            read_file,
            base_dir,
            warnings: Vec::new(),
            locations: BTreeMap::new(),
        };
        let stack = walker.stack(&merged)?;
        warnings.append(&mut walker.warnings);
        let locations = walker.locations;

        let mut services = BTreeMap::new();
        let mut full_names: BTreeMap<String, String> = BTreeMap::new();
        let mut ingress_ports: BTreeMap<(u16, &'static str), String> = BTreeMap::new();
        for (short, service) in &stack.services {
            let path = parse::join("services", short);
            let spec = convert::to_service_spec(stack_name, short, service, &stack, &locations)?;
            // Swarm compares service names case-insensitively.
            if let Some(other) = full_names.insert(spec.name.to_ascii_lowercase(), short.clone()) {
                return Err(ComposeError::invalid(
                    convert::find_location(&locations, &path),
                    path,
                    format!("service name {:?} collides with that of service {other:?}", spec.name),
                ));
            }
            for port in spec.endpoint.ports.iter().filter(|p| p.mode == PublishMode::Ingress && p.published != 0) {
                let key = (port.published, port.protocol.as_str());
                if let Some(other) = ingress_ports.insert(key, short.clone()) {
                    let path = parse::join(&path, "ports");
                    return Err(ComposeError::invalid(
                        convert::find_location(&locations, &path),
                        path,
                        format!("port {}/{} is already published by service {other:?}", key.0, key.1),
                    ));
                }
            }
            if spec.endpoint.mode == shoal_types::EndpointMode::Dnsrr
                && spec.endpoint.ports.iter().any(|p| p.mode == PublishMode::Ingress)
            {
                let path = parse::join(&path, "deploy.endpoint_mode");
                return Err(ComposeError::invalid(
                    convert::find_location(&locations, &path),
                    path,
                    "dnsrr cannot be used with ports published in ingress mode (publish them with mode: host)",
                ));
            }
            services.insert(short.clone(), spec);
        }

        let normalized_yaml = serde_saphyr::to_string(&stack)
            .map_err(|e| ComposeError::invalid(None, "", format!("cannot serialise the normalised stack: {e}")))?;
        let mut seen = BTreeSet::new();
        warnings.retain(|w| seen.insert(w.clone()));
        Ok((stack, services, normalized_yaml))
    };
    let (stack, services, normalized_yaml) = match body() {
        Ok(loaded) => loaded,
        Err(source) if !warnings.is_empty() => {
            return Err(ComposeError::Warned { warnings, source: Box::new(source) });
        }
        Err(e) => return Err(e),
    };
    Ok(Loaded { stack, services, warnings, normalized_yaml })
}
