//! The `shoal` command line: docker-style `service`, `node`, `cluster` and `stack` commands talking
//! gRPC to any manager's Control service.
//!
//! Layout: [`args`] holds the clap definitions and the pure flag → spec conversion, [`output`] the
//! pure renderers (tables, `--pretty`, `cluster info`), [`client`] the typed gRPC wrapper and
//! [`commands`] glues them together.
#![forbid(unsafe_code)]

pub mod args;
pub mod client;
pub mod commands;
pub mod error;
pub mod generate;
pub mod names;
pub mod output;
pub mod progress;
pub mod stack;
pub mod timefmt;

pub use args::Cli;
pub use commands::{print_error, run};
pub use error::CliError;
