//! The proxy's configuration.

use std::net::IpAddr;
use std::net::Ipv4Addr;

/// A configuration rule that does not hold; the message names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid proxy configuration: {0}")]
pub struct ConfigError(pub String);

/// What one node's proxy serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The node's address: NodePort and LoadBalancer services are served on
    /// `node_ip:nodePort` (`--node-ip`).
    pub node_ip: IpAddr,
    /// Whether to listen on `clusterIP:port` too (off with `--no-cluster-ips`). The address must be
    /// local to the machine (on a loopback or dummy interface) for the bind to succeed; a bind
    /// that fails is logged and retried on the next change, not fatal.
    pub bind_cluster_ips: bool,
}

impl Default for ProxyConfig {
    /// Loopback and no ClusterIPs: what works on any machine without setting up addresses.
    fn default() -> Self {
        ProxyConfig { node_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), bind_cluster_ips: false }
    }
}

impl ProxyConfig {
    /// Checks rules across fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: &str| Err(ConfigError(msg.to_string()));
        if self.node_ip.is_unspecified() {
            // A wildcard listener would take every address's nodePort, including other nodes'
            // on the same machine.
            return fail("--node-ip must be a specific address, not 0.0.0.0 or ::");
        }
        if self.node_ip.is_multicast() {
            return fail("--node-ip must be a unicast address");
        }
        if let IpAddr::V4(v4) = self.node_ip
            && v4.is_broadcast()
        {
            return fail("--node-ip must not be the broadcast address");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        assert_eq!(ProxyConfig::default().validate(), Ok(()));
    }

    #[test]
    fn a_wildcard_or_multicast_node_ip_is_refused_naming_the_flag() {
        for ip in ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255"] {
            let config = ProxyConfig { node_ip: ip.parse().expect("ip"), bind_cluster_ips: false };
            let err = config.validate().expect_err(ip);
            assert!(err.0.contains("--node-ip"), "{err}");
        }
    }
}
