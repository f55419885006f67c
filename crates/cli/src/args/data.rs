//! `shoal secret …` and `shoal config …` arguments (the same commands for both kinds).

use clap::{Args, Subcommand};

use super::{InfoFormat, parsers};

#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum DataCommand {
    /// Create one from a file, or from standard input with "-"
    Create(DataCreateArgs),
    /// List them (never their values)
    #[command(visible_alias = "list")]
    Ls(DataLsArgs),
    /// Display detailed information on one or more (never their values)
    Inspect(DataInspectArgs),
    /// Remove one or more (refused while a service uses one)
    #[command(visible_alias = "remove")]
    Rm(DataRmArgs),
}

#[derive(Args, Clone, Debug, PartialEq)]
pub struct DataCreateArgs {
    /// Labels, key=value (repeatable)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE", value_parser = parsers::key_value)]
    pub labels: Vec<(String, String)>,
    /// The name services use it by
    #[arg(value_name = "NAME", value_parser = parsers::data_name)]
    pub name: String,
    /// The file holding the value ("-": standard input)
    #[arg(value_name = "FILE|-")]
    pub file: String,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub struct DataLsArgs {
    /// Only display IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Output format
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = InfoFormat::Text)]
    pub format: InfoFormat,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub struct DataInspectArgs {
    /// Print the information in a human friendly format
    #[arg(long)]
    pub pretty: bool,
    /// Names, ids or id prefixes
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub struct DataRmArgs {
    /// Names, ids or id prefixes
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

/// `shoal network …`: a network is a named scope with labels and no value.
#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum NetworkCommand {
    /// Create a network
    Create(NetworkCreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(DataLsArgs),
    /// Display detailed information on one or more networks
    Inspect(DataInspectArgs),
    /// Remove one or more networks (refused while a service is on one)
    #[command(visible_alias = "remove")]
    Rm(DataRmArgs),
}

#[derive(Args, Clone, Debug, PartialEq)]
pub struct NetworkCreateArgs {
    /// Labels, key=value (repeatable)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE", value_parser = parsers::key_value)]
    pub labels: Vec<(String, String)>,
    /// Driver: "overlay", the only one (accepted for docker's command lines; services reach
    /// each other through every node's proxy, across nodes)
    #[arg(short = 'd', long = "driver", value_name = "DRIVER", value_parser = ["overlay"])]
    pub driver: Option<String>,
    /// Accepted for docker's command lines: any service may join a shoal network
    #[arg(long)]
    pub attachable: bool,
    /// The name services join it by
    #[arg(value_name = "NAME", value_parser = parsers::network_name)]
    pub name: String,
}
