//! Errors. Every message names where the problem is: `file:line:column: key.path: what is wrong`.

use std::fmt;
use std::path::PathBuf;

/// A position in a stack file (1-based line and column, counted in characters).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub file: String,
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why a stack could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// No stack file was given.
    #[error("no stack file given (use -c/--compose-file)")]
    NoFiles,
    /// A stack file (or the `.env` file beside it) could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed YAML (or a `.env` line is malformed).
    #[error("{location}: {message}")]
    Syntax { location: Location, message: String },
    /// A key or value is wrong. `path` is the compose key path (`services.web.deploy.replicas`).
    #[error("{}{path}: {message}", location.as_ref().map(|l| format!("{l}: ")).unwrap_or_default())]
    Invalid { location: Option<Location>, path: String, message: String },
    /// An error that came after warnings which may explain it (`warnings` first, then `source`).
    #[error("{source}")]
    Warned { warnings: Vec<String>, source: Box<ComposeError> },
    /// `-` (standard input) was given as a stack file more than once.
    #[error("-c - (read the stack file from standard input) may be given only once")]
    StdinTwice,
    /// The stack name is not usable as a prefix of service names.
    #[error("invalid stack name {name:?}: {reason}")]
    StackName { name: String, reason: String },
}

impl ComposeError {
    pub(crate) fn invalid(location: Option<Location>, path: impl Into<String>, message: impl Into<String>) -> Self {
        ComposeError::Invalid { location, path: path.into(), message: message.into() }
    }

    /// Where the problem is, when it is known.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ComposeError::Syntax { location, .. } => Some(location),
            ComposeError::Invalid { location, .. } => location.as_ref(),
            ComposeError::Warned { source, .. } => source.location(),
            _ => None,
        }
    }
}
