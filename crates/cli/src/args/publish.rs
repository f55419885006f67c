//! `-p/--publish`: docker's short syntax `[published:]target[/protocol]` and long syntax
//! `mode=host,target=80,published=8080,protocol=tcp`. Port ranges and host IPs are not supported.

use shoal_types::{PortConfig, PortProtocol, PublishMode};

/// Parses one `--publish` value.
pub fn parse_publish(text: &str) -> Result<PortConfig, String> {
    if text.contains('=') { parse_long(text) } else { parse_short(text) }
}

/// A `--publish-rm` value: the published port with this target (and protocol) is removed; the
/// publish mode must match too only when it was given (long syntax `mode=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRemoval {
    pub target: u16,
    pub protocol: PortProtocol,
    pub mode: Option<PublishMode>,
}

impl PortRemoval {
    pub fn matches(&self, port: &PortConfig) -> bool {
        port.target == self.target && port.protocol == self.protocol && self.mode.is_none_or(|m| m == port.mode)
    }
}

/// Parses one `--publish-rm` value: `target[/protocol]`, `published:target[/protocol]` (the
/// published port is ignored, as docker does) or the long syntax.
pub fn parse_publish_rm(text: &str) -> Result<PortRemoval, String> {
    let long = text.contains('=');
    let port = parse_publish(text)?;
    let mode_given = long && text.split(',').any(|f| f.trim().to_ascii_lowercase().starts_with("mode="));
    Ok(PortRemoval { target: port.target, protocol: port.protocol, mode: mode_given.then_some(port.mode) })
}

fn parse_short(text: &str) -> Result<PortConfig, String> {
    let (ports, protocol) = match text.rsplit_once('/') {
        Some((ports, proto)) => (ports, parse_protocol(proto)?),
        None => (text, PortProtocol::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [target] => (0, parse_port("target", target, false)?),
        [published, target] => (parse_port("published", published, true)?, parse_port("target", target, false)?),
        _ => {
            return Err("expected [published:]target[/protocol] (publishing on a specific host IP is not supported)"
                .to_string());
        }
    };
    Ok(PortConfig { target, published, protocol, mode: PublishMode::Ingress })
}

fn parse_long(text: &str) -> Result<PortConfig, String> {
    let mut port = PortConfig::default();
    let mut target = None;
    for field in text.split(',') {
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let (key, value) =
            field.split_once('=').ok_or_else(|| format!("invalid field {field:?}: expected key=value"))?;
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "target" => target = Some(parse_port("target", value, false)?),
            "published" => port.published = parse_port("published", value, true)?,
            "protocol" => port.protocol = parse_protocol(value)?,
            "mode" => {
                port.mode = match value.to_ascii_lowercase().as_str() {
                    "ingress" => PublishMode::Ingress,
                    "host" => PublishMode::Host,
                    _ => return Err(format!("invalid publish mode {value:?} (allowed: ingress, host)")),
                }
            }
            other => {
                return Err(format!("unknown field {other:?} (allowed: mode, target, published, protocol)"));
            }
        }
    }
    port.target = target.ok_or_else(|| "missing mandatory field \"target\"".to_string())?;
    Ok(port)
}

fn parse_protocol(text: &str) -> Result<PortProtocol, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(PortProtocol::Tcp),
        "udp" => Ok(PortProtocol::Udp),
        "sctp" => Ok(PortProtocol::Sctp),
        _ => Err(format!("invalid protocol {text:?} (allowed: tcp, udp, sctp)")),
    }
}

fn parse_port(which: &str, text: &str, zero_ok: bool) -> Result<u16, String> {
    let port: u16 =
        text.trim().parse().map_err(|_| format!("invalid {which} port {text:?}: expected a number in [1, 65535]"))?;
    if port == 0 && !zero_ok {
        return Err(format!("invalid {which} port {text:?}: expected a number in [1, 65535]"));
    }
    Ok(port)
}

/// Formats a published port the way `docker service ls` shows it: `*:8080->80/tcp`.
pub fn format_port(port: &PortConfig) -> String {
    format!("*:{}->{}/{}", port.published, port.target, port.protocol.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(published: u16, target: u16, protocol: PortProtocol, mode: PublishMode) -> PortConfig {
        PortConfig { target, published, protocol, mode }
    }

    #[test]
    fn short_syntax() {
        use PortProtocol::*;
        use PublishMode::*;
        assert_eq!(parse_publish("8080:80").unwrap(), port(8080, 80, Tcp, Ingress));
        assert_eq!(parse_publish("80").unwrap(), port(0, 80, Tcp, Ingress));
        assert_eq!(parse_publish("53:53/udp").unwrap(), port(53, 53, Udp, Ingress));
        assert_eq!(parse_publish("9000/sctp").unwrap(), port(0, 9000, Sctp, Ingress));
    }

    #[test]
    fn long_syntax() {
        use PortProtocol::*;
        use PublishMode::*;
        assert_eq!(
            parse_publish("mode=host,target=80,published=8080,protocol=tcp").unwrap(),
            port(8080, 80, Tcp, Host)
        );
        assert_eq!(parse_publish("target=53,protocol=udp").unwrap(), port(0, 53, Udp, Ingress));
        assert_eq!(parse_publish("published=8080,target=80").unwrap(), port(8080, 80, Tcp, Ingress));
    }

    #[test]
    fn refusals_say_why() {
        assert!(parse_publish("abc").unwrap_err().contains("target port \"abc\""));
        assert!(parse_publish("0").is_err());
        assert!(parse_publish("70000:80").unwrap_err().contains("published port"));
        assert!(parse_publish("80/icmp").unwrap_err().contains("invalid protocol"));
        assert!(parse_publish("127.0.0.1:80:80").unwrap_err().contains("host IP"));
        assert_eq!(parse_publish("published=80").unwrap_err(), "missing mandatory field \"target\"");
        assert!(parse_publish("target=80,mode=bridge").unwrap_err().contains("publish mode"));
        assert!(parse_publish("target=80,color=red").unwrap_err().contains("unknown field \"color\""));
    }

    #[test]
    fn removals_match_target_and_protocol() {
        use PortProtocol::*;
        use PublishMode::*;
        let rm = parse_publish_rm("80").unwrap();
        assert_eq!(rm, PortRemoval { target: 80, protocol: Tcp, mode: None });
        assert!(rm.matches(&port(8080, 80, Tcp, Ingress)));
        assert!(rm.matches(&port(8080, 80, Tcp, Host)), "mode not given: any mode");
        assert!(!rm.matches(&port(8080, 80, Udp, Ingress)));
        assert!(!rm.matches(&port(80, 81, Tcp, Ingress)));
        assert_eq!(parse_publish_rm("8080:80/udp").unwrap(), PortRemoval { target: 80, protocol: Udp, mode: None });
        let host = parse_publish_rm("target=80,mode=host").unwrap();
        assert!(host.matches(&port(8080, 80, Tcp, Host)));
        assert!(!host.matches(&port(8080, 80, Tcp, Ingress)));
        assert!(parse_publish_rm("x").is_err());
    }

    #[test]
    fn formats_like_docker() {
        assert_eq!(format_port(&port(8080, 80, PortProtocol::Tcp, PublishMode::Ingress)), "*:8080->80/tcp");
    }
}
