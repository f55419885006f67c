#![forbid(unsafe_code)]

use std::process::ExitCode;

use shoal_cli::{Cli, CliError, print_error, run};

fn main() -> ExitCode {
    let cli = match Cli::parse_checked(std::env::args_os()) {
        Ok(cli) => cli,
        // Usage errors exit 2; --help and --version exit 0.
        Err(e) => e.exit(),
    };
    if cli.with_registry_auth() {
        eprintln!("{}", shoal_cli::args::REGISTRY_AUTH_NOTE);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            print_error(&CliError::Message(format!("cannot start the async runtime: {e}")));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}
