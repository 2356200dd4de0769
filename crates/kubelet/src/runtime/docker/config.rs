//! The Docker runtime's configuration.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// How the Docker runtime is set up on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerConfig {
    /// The Node's name (`--name`): every container, and the network, carries it in the
    /// `trireme.node` label, so that two nodes can share one Docker daemon.
    pub node_name: String,
    /// The bridge network pods get their IPs on (`--docker-network`; default
    /// `trireme-<node_name>`). Created if missing, never deleted while pods exist.
    pub network: Option<String>,
    /// The IPv4 subnet of that network when the runtime creates it (`--docker-subnet`, e.g.
    /// `172.30.1.0/24`); by default Docker picks one. An existing network is used as it is.
    pub subnet: Option<String>,
    /// The Docker daemon's socket (`--docker-socket`); by default `DOCKER_HOST` or
    /// `/var/run/docker.sock`.
    pub socket: Option<PathBuf>,
}

impl DockerConfig {
    /// Checks the configuration; the message names the flag to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_name.is_empty() {
            return Err("--name is required".to_string());
        }
        let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if !self.node_name.chars().all(name_char) {
            return Err(format!("--name {:?}: only letters, digits, '-', '.' and '_' may be used", self.node_name));
        }
        let network = self.network_name();
        if network.is_empty() || !network.chars().all(name_char) {
            return Err(format!("--docker-network {network:?}: only letters, digits, '-', '.' and '_' may be used"));
        }
        if let Some(subnet) = &self.subnet {
            parse_subnet(subnet).map_err(|why| format!("--docker-subnet {subnet:?}: {why}"))?;
        }
        if let Some(socket) = &self.socket
            && !socket.is_absolute()
        {
            return Err(format!("--docker-socket {}: the path must be absolute", socket.display()));
        }
        Ok(())
    }

    /// The network's name: `network`, or `trireme-<node_name>`.
    pub fn network_name(&self) -> String {
        match &self.network {
            Some(network) => network.clone(),
            None => format!("trireme-{}", self.node_name),
        }
    }
}

/// Parses an IPv4 network such as `172.30.1.0/24`.
fn parse_subnet(text: &str) -> Result<(Ipv4Addr, u8), &'static str> {
    let (addr, prefix) = text.split_once('/').ok_or("expected an IPv4 network such as 172.30.1.0/24")?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| "not an IPv4 address")?;
    let prefix: u8 = prefix.parse().map_err(|_| "the prefix length is not a number")?;
    if !(8..=29).contains(&prefix) {
        return Err("the prefix length must be between 8 and 29");
    }
    if u32::from(addr) & !(u32::MAX << (32 - prefix)) != 0 {
        return Err("the address has host bits set");
    }
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_defaults_to_one_per_node() {
        let config = DockerConfig { node_name: "n1".into(), ..DockerConfig::default() };
        assert_eq!(config.network_name(), "trireme-n1");
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn bad_settings_are_refused_naming_the_flag() {
        let err = |config: DockerConfig| config.validate().err().unwrap_or_default();
        assert!(err(DockerConfig::default()).contains("--name"));
        let base = DockerConfig { node_name: "n1".into(), ..DockerConfig::default() };
        assert!(err(DockerConfig { subnet: Some("172.30.1.1/24".into()), ..base.clone() }).contains("--docker-subnet"));
        assert!(err(DockerConfig { subnet: Some("172.30.1.0".into()), ..base.clone() }).contains("--docker-subnet"));
        assert!(err(DockerConfig { network: Some("a b".into()), ..base.clone() }).contains("--docker-network"));
        assert!(err(DockerConfig { socket: Some("docker.sock".into()), ..base.clone() }).contains("--docker-socket"));
        assert_eq!(DockerConfig { subnet: Some("172.30.1.0/24".into()), ..base }.validate(), Ok(()));
    }
}
