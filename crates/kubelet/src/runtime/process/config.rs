//! The process runtime's configuration and the pod CIDR it allocates pod IPs from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// How the process runtime is set up on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    /// The node's state: `<root_dir>/pods/<uid>/sandbox.json` and
    /// `<root_dir>/pods/<uid>/containers/<name>-<attempt>/{config.json,state.json,log}`.
    pub root_dir: PathBuf,
    /// The IPv4 network (inside 127.0.0.0/8) pod IPs are allocated from, starting at `.2`
    /// (flag `--pod-cidr`, e.g. `127.10.1.0/24`).
    pub pod_cidr: String,
    /// The program and leading arguments that start the shim (`<helper> shim ...`) and the
    /// built-in images (`<helper> image NAME ...`): in production the trireme binary itself.
    pub helper: Vec<OsString>,
    /// `--image NAME=PATH`: an image name mapped to an executable (the entrypoint) or a
    /// directory (the working directory; `command[0]` is looked up inside it, then on PATH).
    pub images: BTreeMap<String, PathBuf>,
    /// Where container cgroups go on a cgroup v2 machine (default `/sys/fs/cgroup/trireme`).
    pub cgroup_root: Option<PathBuf>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            root_dir: PathBuf::from("trireme-data/kubelet"),
            pod_cidr: "127.10.1.0/24".to_string(),
            helper: std::env::current_exe().map(|exe| vec![exe.into_os_string()]).unwrap_or_default(),
            images: BTreeMap::new(),
            cgroup_root: None,
        }
    }
}

impl ProcessConfig {
    /// Checks the configuration; the message names the flag to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.root_dir.as_os_str().is_empty() {
            return Err("--root-dir must not be empty".to_string());
        }
        PodCidr::parse(&self.pod_cidr)?;
        match self.helper.first() {
            None => return Err("the process runtime needs a helper program (the trireme binary)".to_string()),
            Some(program) if program.is_empty() => return Err("the helper program's path is empty".to_string()),
            Some(_) => {}
        }
        for (name, path) in &self.images {
            if name.is_empty() {
                return Err(format!("--image ={}: the image name is empty", path.display()));
            }
            if !path.is_absolute() {
                return Err(format!("--image {name}={}: the path must be absolute", path.display()));
            }
            if !path.exists() {
                return Err(format!("--image {name}={}: no such file or directory", path.display()));
            }
        }
        if let Some(root) = &self.cgroup_root
            && !root.is_absolute()
        {
            return Err(format!("--cgroup-root {}: the path must be absolute", root.display()));
        }
        Ok(())
    }
}

/// A parsed `--pod-cidr`: pod IPs are its addresses from `.2` to the one before broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PodCidr {
    network: u32,
    prefix: u8,
}

impl PodCidr {
    pub(crate) fn parse(text: &str) -> Result<PodCidr, String> {
        let bad = |why: &str| format!("--pod-cidr {text:?}: {why}");
        let (addr, prefix) =
            text.split_once('/').ok_or_else(|| bad("expected an IPv4 network such as 127.10.1.0/24"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("the prefix length is not a number"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the prefix length must be between 8 and 30"));
        }
        if addr.octets()[0] != 127 {
            return Err(bad("pods get loopback addresses: the network must be inside 127.0.0.0/8"));
        }
        let mask = u32::MAX << (32 - prefix);
        let network = u32::from(addr);
        if network & !mask != 0 {
            return Err(bad("the address has host bits set"));
        }
        Ok(PodCidr { network, prefix })
    }

    /// The addresses pods may get, lowest first: `.2` up to the one before broadcast (`.1` is
    /// left for the node, as a bridge gateway would be).
    pub(crate) fn pod_ips(&self) -> impl Iterator<Item = Ipv4Addr> {
        let size = 1u32 << (32 - self.prefix);
        (2..size - 1).map(move |host| Ipv4Addr::from(self.network + host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_cidr_outside_loopback_is_refused_naming_the_flag() {
        let err = PodCidr::parse("10.0.0.0/24").err().unwrap_or_default();
        assert!(err.contains("--pod-cidr") && err.contains("127.0.0.0/8"), "{err}");
        assert!(PodCidr::parse("127.10.1.1/24").is_err());
        assert!(PodCidr::parse("127.10.1.0/31").is_err());
    }

    #[test]
    fn pod_ips_start_at_dot_two_and_stop_before_broadcast() {
        let cidr = PodCidr::parse("127.10.1.0/29").unwrap_or_else(|e| panic!("{e}"));
        let ips: Vec<String> = cidr.pod_ips().map(|ip| ip.to_string()).collect();
        assert_eq!(ips, ["127.10.1.2", "127.10.1.3", "127.10.1.4", "127.10.1.5", "127.10.1.6"]);
    }
}
