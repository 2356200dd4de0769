//! The built-in demo images (`<helper> image NAME ARGS...`), so that the usual first pods run
//! without any `--image` mapping:
//!
//! - `http-echo` (`hashicorp/http-echo`): answers every request with `-text` and a newline,
//!   with `-status-code` (200), on `-listen` (`:5678`; an empty host means `$POD_IP`).
//! - `nginx`: the "Welcome to nginx!" page on `$POD_IP:80` (or `$NGINX_PORT`).
//! - `pause` (`registry.k8s.io/pause`): sleeps.
//!
//! Each exits 0 on SIGTERM or SIGINT. Plain `std::net` and a thread per connection: they
//! serve demos and tests, not traffic.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

const NGINX_PAGE: &str = "<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. (Served by Trireme's process runtime.)</p>
</body>
</html>
";

/// Runs the built-in image named by the first argument.
pub(crate) fn main(args: &[OsString]) -> ExitCode {
    let name = args.first().and_then(|name| name.to_str()).unwrap_or_default();
    let rest: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let result = match name {
        "http-echo" => http_echo(&rest),
        "nginx" => nginx(),
        "pause" => until_terminated(),
        _ => Err(format!("unknown image {name:?} (built-in: http-echo, nginx, pause)")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("trireme image {name}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A response every request gets.
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

fn http_echo(args: &[String]) -> Result<(), String> {
    let (mut text, mut listen, mut status) = (None, ":5678".to_string(), 200u16);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let flag = arg.trim_start_matches('-');
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name, value.to_string()),
            None => (flag, args.next().cloned().ok_or_else(|| format!("flag {arg} needs a value"))?),
        };
        match name {
            "text" => text = Some(value),
            "listen" => listen = value,
            "status-code" => status = value.parse().map_err(|_| format!("-status-code={value}: not a number"))?,
            _ => return Err(format!("unknown flag {arg}")),
        }
    }
    let text = text.ok_or("-text is required")?;
    let (host, port) = listen.rsplit_once(':').ok_or_else(|| format!("-listen={listen}: expected HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("-listen={listen}: bad port"))?;
    let ip =
        if host.is_empty() { pod_ip()? } else { host.parse().map_err(|_| format!("-listen={listen}: bad host"))? };
    serve(SocketAddr::new(ip, port), Response { status, content_type: "text/plain; charset=utf-8", body: text + "\n" })
}

fn nginx() -> Result<(), String> {
    let port = match std::env::var("NGINX_PORT") {
        Ok(port) => port.parse().map_err(|_| format!("NGINX_PORT={port}: not a port"))?,
        Err(_) => 80,
    };
    let page = Response { status: 200, content_type: "text/html", body: NGINX_PAGE.to_string() };
    serve(SocketAddr::new(pod_ip()?, port), page)
}

/// `$POD_IP`, or 127.0.0.1 for a process started without one.
fn pod_ip() -> Result<IpAddr, String> {
    match std::env::var("POD_IP") {
        Ok(ip) => ip.parse().map_err(|_| format!("POD_IP={ip}: not an IP address")),
        Err(_) => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    }
}

/// Serves `response` on `addr` until SIGTERM or SIGINT.
fn serve(addr: SocketAddr, response: Response) -> Result<(), String> {
    let signals = block_termination()?;
    let listener = TcpListener::bind(addr).map_err(|e| format!("listening on {addr}: {e}"))?;
    println!("listening on {addr}");
    let response = Arc::new(response);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let response = Arc::clone(&response);
            std::thread::spawn(move || answer(stream, &response));
        }
    });
    wait_for(&signals)
}

fn answer(mut stream: TcpStream, response: &Response) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head_only = request.starts_with(b"HEAD ");
    let reason = match response.status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    if !head_only {
        out.push_str(&response.body);
    }
    let _ = stream.write_all(out.as_bytes());
}

fn until_terminated() -> Result<(), String> {
    let signals = block_termination()?;
    wait_for(&signals)
}

/// Blocks SIGTERM and SIGINT in this thread (and so in the threads it starts afterwards), to
/// receive them with [`wait_for`] instead of dying of them.
fn block_termination() -> Result<SigSet, String> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().map_err(|e| format!("blocking signals: {e}"))?;
    Ok(signals)
}

fn wait_for(signals: &SigSet) -> Result<(), String> {
    let signal = signals.wait().map_err(|e| format!("waiting for a signal: {e}"))?;
    println!("{signal}: exiting");
    Ok(())
}
