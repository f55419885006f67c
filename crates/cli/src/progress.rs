//! Waiting for a service to converge after `create`, `update`, `rollback` and `scale` when `-d`
//! is not given (docker's progress display: "overall progress: N out of M tasks", "verify: …").
//!
//! Not implemented yet: [`wait_for_convergence`] returns at once, so every command returns as
//! soon as the manager accepted the change, with or without `-d`. This is the one place to add
//! it; the commands already call it only when not detached and pass `--quiet`.

use shoal_types::Service;

use crate::client::Client;
use crate::error::CliError;

/// The change being waited for (decides the wording: "rolling back update: …" etc.).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Rollback,
    Scale,
}

/// Waits until `service` (as the manager returned it after the change) has converged, printing
/// progress unless `quiet`. Currently a no-op that reports success.
pub async fn wait_for_convergence(
    client: &mut Client,
    service: &Service,
    operation: Operation,
    quiet: bool,
) -> Result<(), CliError> {
    let _ = (client, service, operation, quiet);
    Ok(())
}
