//! `shoal route …` arguments.

use clap::{Args, Subcommand};

use super::{InfoFormat, parsers};

#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum RouteCommand {
    /// Publish a port over the services a label selector matches (a canary by labels or weight)
    Create(RouteCreateArgs),
    /// List routes
    #[command(visible_alias = "list")]
    Ls(RouteLsArgs),
    /// Display detailed information on one or more routes
    Inspect(RouteInspectArgs),
    /// Change a route's port, selector or weights (new connections follow at once)
    Update(RouteUpdateArgs),
    /// Remove one or more routes (their port closes; open connections go on)
    #[command(visible_alias = "remove")]
    Rm(RouteRmArgs),
}

#[derive(Args, Clone, Debug, PartialEq)]
pub struct RouteCreateArgs {
    /// The published port and the port the selected services' tasks listen on
    #[arg(short = 'p', long = "publish", value_name = "PUBLISHED:TARGET", value_parser = route_ports)]
    pub publish: (u16, u16),
    /// A service label the selected services carry (repeatable: all must match)
    #[arg(long = "select", value_name = "KEY=VALUE", value_parser = parsers::key_value, required = true)]
    pub select: Vec<(String, String)>,
    /// A service's share of the connections in per cent (repeatable); services not named share
    /// what is left. Without any, connections divide by the services' running tasks
    #[arg(long = "weight", value_name = "SERVICE=PERCENT", value_parser = weight)]
    pub weights: Vec<(String, u32)>,
    /// Route labels, key=value (repeatable)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE", value_parser = parsers::key_value)]
    pub labels: Vec<(String, String)>,
    /// The route's name
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub struct RouteUpdateArgs {
    /// A new published port and target
    #[arg(short = 'p', long = "publish", value_name = "PUBLISHED:TARGET", value_parser = route_ports)]
    pub publish: Option<(u16, u16)>,
    /// A new selector (repeatable; replaces the whole selector)
    #[arg(long = "select", value_name = "KEY=VALUE", value_parser = parsers::key_value)]
    pub select: Vec<(String, String)>,
    /// Set a service's share in per cent (repeatable)
    #[arg(long = "weight", value_name = "SERVICE=PERCENT", value_parser = weight)]
    pub weights: Vec<(String, u32)>,
    /// Drop a service's share (repeatable)
    #[arg(long = "weight-rm", value_name = "SERVICE")]
    pub weights_rm: Vec<String>,
    /// The route's name or id
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub struct RouteLsArgs {
    /// Only display IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Output format
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = InfoFormat::Text)]
    pub format: InfoFormat,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub struct RouteInspectArgs {
    /// Names, ids or id prefixes
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub struct RouteRmArgs {
    /// Names, ids or id prefixes
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

fn port(text: &str, what: &str) -> Result<u16, String> {
    text.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{what} port {text:?} is not in [1, 65535]"))
}

/// `PUBLISHED:TARGET`.
pub fn route_ports(text: &str) -> Result<(u16, u16), String> {
    let (published, target) =
        text.split_once(':').ok_or_else(|| format!("{text:?} is not PUBLISHED:TARGET (e.g. 8080:80)"))?;
    Ok((port(published, "published")?, port(target, "target")?))
}

/// `SERVICE=PERCENT`, a whole number from 0 to 100.
pub fn weight(text: &str) -> Result<(String, u32), String> {
    let (service, share) = text.split_once('=').ok_or_else(|| format!("{text:?} is not SERVICE=PERCENT"))?;
    if service.is_empty() {
        return Err(format!("{text:?}: the service name is empty"));
    }
    let share = share
        .parse::<u32>()
        .ok()
        .filter(|s| *s <= 100)
        .ok_or_else(|| format!("{text:?}: a weight is a whole number of per cent from 0 to 100"))?;
    Ok((service.to_string(), share))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_weights_parse_or_say_what_is_allowed() {
        assert_eq!(route_ports("8080:80"), Ok((8080, 80)));
        assert!(route_ports("8080").unwrap_err().contains("PUBLISHED:TARGET"));
        assert!(route_ports("0:80").unwrap_err().contains("published port \"0\""));
        assert!(route_ports("8080:70000").unwrap_err().contains("target port"));
        assert_eq!(weight("web-canary=10"), Ok(("web-canary".into(), 10)));
        assert!(weight("web=-1").unwrap_err().contains("from 0 to 100"));
        assert!(weight("web=101").unwrap_err().contains("from 0 to 100"));
        assert!(weight("=5").unwrap_err().contains("service name is empty"));
    }
}
