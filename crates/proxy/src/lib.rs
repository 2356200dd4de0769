//! The node's service proxy, like kube-proxy in userspace mode: it listens on each TCP
//! Service's `clusterIP:port` (when asked to) and, for NodePort and LoadBalancer services, on
//! `nodeIP:nodePort`, and forwards each connection to a ready endpoint, round robin.
//!
//! The entry point is [`ServiceProxy::run`]. It watches Services and `discovery.k8s.io/v1`
//! EndpointSlices through the Kubernetes API only — never the store — with kube's watcher and
//! reflectors. Each change is turned into a [`Table`] by [`desired_table`], a pure function, and
//! the [`ListenerManager`] brings the open listeners in line with it. Listeners share their
//! address with other nodes' proxies on the same machine (SO_REUSEPORT).

pub mod config;
pub mod listener;
pub mod proxy;
pub mod table;

pub use config::ConfigError;
pub use config::ProxyConfig;
pub use listener::ListenerManager;
pub use proxy::ProxyError;
pub use proxy::ServiceProxy;
pub use table::ListenAddr;
pub use table::Route;
pub use table::Table;
pub use table::desired_table;
