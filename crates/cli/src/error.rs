//! The CLI's errors and their exit codes: 2 for usage errors (clap's), 1 for everything else.

use std::fmt;

#[derive(Debug)]
pub enum CliError {
    /// A usage error, printed by clap (exit code 2).
    Usage(clap::Error),
    /// No manager answered at the address.
    Unreachable { addr: String, reason: String },
    /// A manager refused or failed the call.
    Status(Box<tonic::Status>),
    /// Anything else worth one line.
    Message(String),
    /// Errors were already printed (e.g. some of several `rm` targets failed).
    Reported,
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(e) => u8::try_from(e.exit_code()).unwrap_or(2),
            _ => 1,
        }
    }

    /// The status code when a manager answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            CliError::Status(status) => Some(status.code()),
            _ => None,
        }
    }

    /// Replaces a manager's "not found" answer with `<kind> <name> not found`, naming the object
    /// the way the user wrote it.
    pub fn not_found_as(self, kind: &str, name: &str) -> CliError {
        match self.code() {
            Some(tonic::Code::NotFound) => CliError::Message(format!("{kind} {name} not found")),
            _ => self,
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError::Status(Box::new(status))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(e) => write!(f, "{}", e.render()),
            CliError::Unreachable { addr, reason } => write!(
                f,
                "cannot reach a manager at {addr}: {reason} (is shoal-manager running? use --host or SHOAL_HOST)"
            ),
            CliError::Status(status) => {
                if status.message().is_empty() {
                    write!(f, "{}", status.code().description())
                } else {
                    f.write_str(status.message())
                }
            }
            CliError::Message(message) => f.write_str(message),
            CliError::Reported => f.write_str("errors were reported"),
        }
    }
}

impl std::error::Error for CliError {}

/// An error and its sources as one line (`transport error: tcp connect error: Connection refused`),
/// leaving out repeats.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_print_the_message() {
        let e = CliError::from(tonic::Status::invalid_argument("update_config.max_failure_ratio: 2 is outside [0, 1]"));
        assert_eq!(e.to_string(), "update_config.max_failure_ratio: 2 is outside [0, 1]");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn not_found_names_the_object_as_written() {
        let e = CliError::from(tonic::Status::not_found("no such thing")).not_found_as("service", "web");
        assert_eq!(e.to_string(), "service web not found");
        let e = CliError::from(tonic::Status::unavailable("no leader")).not_found_as("service", "web");
        assert_eq!(e.to_string(), "no leader");
    }

    #[test]
    fn unreachable_says_what_to_do() {
        let e = CliError::Unreachable { addr: "127.0.0.1:1".into(), reason: "connection refused".into() };
        assert_eq!(
            e.to_string(),
            "cannot reach a manager at 127.0.0.1:1: connection refused (is shoal-manager running? use --host or SHOAL_HOST)"
        );
    }

    #[test]
    fn chains_sources_without_repeats() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let outer = std::io::Error::other(Wrapper(inner));
        assert_eq!(error_chain(&outer), "tcp connect error: Connection refused");
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("tcp connect error")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
