//! The CLI's errors and their exit codes, all mapped here: 2 for usage errors (clap's), 3/4/5 for
//! an update or rollback that did not end where it was asked to go (only `service update` and
//! `service rollback`), 130 for an interrupted wait, 1 for everything else.

use std::fmt;

/// Any error not listed below.
pub const EXIT_FAILURE: u8 = 1;
/// A usage error (clap's code).
pub const EXIT_USAGE: u8 = 2;
/// `service update`: the update ended `paused` (a task failed; `--update-failure-action pause`).
pub const EXIT_UPDATE_PAUSED: u8 = 3;
/// `service update`: the update failed and the cluster rolled it back on its own
/// (`--update-failure-action rollback`); the rollback completed. docker exits 0 here.
pub const EXIT_ROLLED_BACK: u8 = 4;
/// `service update` / `service rollback`: the rollback ended `rollback_paused`.
pub const EXIT_ROLLBACK_PAUSED: u8 = 5;
/// Ctrl-C while waiting for convergence (128 + SIGINT); the cluster carries on.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The exit codes, as `service update --help` and `service rollback --help` list them.
pub const EXIT_CODES_HELP: &str = "\
Exit status (when waiting for the service to converge, i.e. without -d):
  0    converged: the update completed, a manually requested rollback completed, or no task
       needed replacing
  1    any other error, including the service being removed while waiting and the manager
       staying unreachable for more than 10 seconds
  2    usage error
  3    the update paused after a task failure (\"service update paused: <message>\")
  4    the update failed and was rolled back automatically (--update-failure-action rollback);
       the rollback completed (\"service rolled back: <message>\")
  5    the rollback paused after a task failure (\"service rollback paused: <message>\")
  130  interrupted (Ctrl-C) while waiting; the update continues in the cluster";

/// How a rolling update or rollback that the CLI waited for ended short of its goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutEnd {
    /// The update status became `paused`.
    UpdatePaused,
    /// The update was rolled back automatically and the rollback completed.
    RolledBack,
    /// The update status became `rollback_paused`.
    RollbackPaused,
}

impl RolloutEnd {
    pub fn exit_code(self) -> u8 {
        match self {
            RolloutEnd::UpdatePaused => EXIT_UPDATE_PAUSED,
            RolloutEnd::RolledBack => EXIT_ROLLED_BACK,
            RolloutEnd::RollbackPaused => EXIT_ROLLBACK_PAUSED,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            RolloutEnd::UpdatePaused => "service update paused",
            RolloutEnd::RolledBack => "service rolled back",
            RolloutEnd::RollbackPaused => "service rollback paused",
        }
    }
}

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
    /// The rollout waited for ended short of its goal. `own_code`: exit with the
    /// [`RolloutEnd`]'s code (`service update`/`rollback`); otherwise with 1 (`create`, `scale`).
    Rollout { end: RolloutEnd, message: String, own_code: bool },
    /// Ctrl-C while waiting for convergence; nothing was changed in the cluster.
    Interrupted,
    /// One service of several failed (`stack deploy`): `app_web: service update paused: …`,
    /// with that error's exit code.
    InService { service: String, error: Box<CliError> },
    /// Errors were already printed; exit with this code (`stack deploy`: the first failure's).
    ReportedExit(u8),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(e) => u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE),
            CliError::Rollout { end, own_code: true, .. } => end.exit_code(),
            CliError::Interrupted => EXIT_INTERRUPTED,
            CliError::InService { error, .. } => error.exit_code(),
            CliError::ReportedExit(code) => *code,
            _ => EXIT_FAILURE,
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
            CliError::Reported | CliError::ReportedExit(_) => f.write_str("errors were reported"),
            CliError::InService { service, error } => write!(f, "{service}: {error}"),
            CliError::Rollout { end, message, .. } => write!(f, "{}: {message}", end.prefix()),
            CliError::Interrupted => f.write_str("stopped waiting; the update continues in the cluster"),
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
    fn rollout_ends_have_their_own_codes_only_where_asked() {
        let paused = CliError::Rollout { end: RolloutEnd::UpdatePaused, message: "m".into(), own_code: true };
        assert_eq!((paused.exit_code(), paused.to_string().as_str()), (3, "service update paused: m"));
        let back = CliError::Rollout { end: RolloutEnd::RolledBack, message: "m".into(), own_code: true };
        assert_eq!((back.exit_code(), back.to_string().as_str()), (4, "service rolled back: m"));
        let stuck = CliError::Rollout { end: RolloutEnd::RollbackPaused, message: "m".into(), own_code: true };
        assert_eq!((stuck.exit_code(), stuck.to_string().as_str()), (5, "service rollback paused: m"));
        let scale = CliError::Rollout { end: RolloutEnd::UpdatePaused, message: "m".into(), own_code: false };
        assert_eq!(scale.exit_code(), 1);
        let web = CliError::InService { service: "app_web".into(), error: Box::new(paused) };
        assert_eq!((web.exit_code(), web.to_string().as_str()), (3, "app_web: service update paused: m"));
        assert_eq!(CliError::ReportedExit(4).exit_code(), 4);
        assert_eq!(CliError::Interrupted.exit_code(), 130);
        assert_eq!(CliError::Interrupted.to_string(), "stopped waiting; the update continues in the cluster");
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
