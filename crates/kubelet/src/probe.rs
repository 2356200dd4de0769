//! Liveness, readiness and startup probes: exec, httpGet and tcpSocket, as the kubelet runs
//! them, and the counters that turn single results into a verdict.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::runtime::ContainerRuntime;

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Why it failed, as `kubectl describe` shows it in the event.
    Failure(String),
}

/// Runs `probe` once against a container listening on `pod_ip`.
pub async fn run(
    probe: &Probe,
    container: &Container,
    pod_ip: IpAddr,
    runtime: &dyn ContainerRuntime,
    container_id: &str,
) -> Outcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match runtime.exec(container_id, &command, timeout).await {
            Ok(out) if out.exit_code == 0 => Outcome::Success,
            Ok(out) => Outcome::Failure(format!(
                "command {:?} exited with {}: {}",
                command,
                out.exit_code,
                String::from_utf8_lossy(&out.output).trim()
            )),
            Err(e) => Outcome::Failure(format!("exec failed: {e}")),
        };
    }
    if let Some(http) = &probe.http_get {
        let Some(port) = resolve_port(&http.port, container) else {
            return Outcome::Failure(format!("unknown port {:?}", http.port));
        };
        let host = http.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(pod_ip);
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> =
            http.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
        return match tokio::time::timeout(timeout, http_get(SocketAddr::new(host, port), &path, &headers)).await {
            Ok(Ok(code)) if (200..400).contains(&code) => Outcome::Success,
            Ok(Ok(code)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(e)) => Outcome::Failure(format!("Get \"http://{host}:{port}{path}\": {e}")),
            Err(_) => Outcome::Failure(format!("Get \"http://{host}:{port}{path}\": timed out after {timeout:?}")),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = resolve_port(&tcp.port, container) else {
            return Outcome::Failure(format!("unknown port {:?}", tcp.port));
        };
        let host = tcp.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(pod_ip);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(e)) => Outcome::Failure(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    Outcome::Failure("probe has no handler (exec, httpGet or tcpSocket)".into())
}

/// A probe's port: a number, or the name of one of the container's ports.
fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => match name.parse::<u16>() {
            Ok(n) => Some(n),
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        },
    }
}

/// A minimal HTTP/1.1 GET: returns the status code.
async fn http_get(addr: SocketAddr, path: &str, headers: &[(String, String)]) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}

/// Turns results into a verdict with the probe's thresholds and schedule.
#[derive(Debug, Clone)]
pub struct Prober {
    pub probe: Probe,
    successes: i32,
    failures: i32,
    /// The verdict so far: None until the thresholds are first met.
    pub verdict: Option<bool>,
    next: Instant,
    pub last_failure: Option<String>,
}

impl Prober {
    /// A prober for a container started at `started` (initialDelaySeconds counts from there).
    pub fn new(probe: Probe, started: Instant) -> Prober {
        let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        Prober { probe, successes: 0, failures: 0, verdict: None, next: started + delay, last_failure: None }
    }

    /// When the probe should run next.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// Records one result; returns the verdict if it changed.
    pub fn record(&mut self, outcome: Outcome, now: Instant) -> Option<bool> {
        self.next = now + Duration::from_secs(self.probe.period_seconds.unwrap_or(10).max(1) as u64);
        let before = self.verdict;
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                    self.verdict = Some(true);
                }
            }
            Outcome::Failure(why) => {
                self.successes = 0;
                self.failures += 1;
                self.last_failure = Some(why);
                if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                    self.verdict = Some(false);
                }
            }
        }
        (self.verdict != before).then_some(self.verdict).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: i32, failure: i32) -> Probe {
        Probe {
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            period_seconds: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn thresholds_turn_results_into_verdicts() {
        let now = Instant::now();
        let mut p = Prober::new(probe(1, 3), now);
        assert_eq!(p.record(Outcome::Success, now), Some(true));
        assert_eq!(p.record(Outcome::Failure("x".into()), now), None);
        assert_eq!(p.record(Outcome::Failure("x".into()), now), None);
        assert_eq!(p.record(Outcome::Failure("x".into()), now), Some(false));
        assert_eq!(p.record(Outcome::Success, now), Some(true));
        assert_eq!(p.due(), now + Duration::from_secs(1));
    }

    #[test]
    fn named_ports_resolve_through_the_container() {
        let container = Container {
            ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(resolve_port(&IntOrString::String("http".into()), &container), Some(8080));
        assert_eq!(resolve_port(&IntOrString::Int(9), &container), Some(9));
        assert_eq!(resolve_port(&IntOrString::String("nope".into()), &container), None);
    }
}
