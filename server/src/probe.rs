//! `courier-server healthcheck`: asks a running server's `/healthz` over loopback, for
//! a container's health check (the runtime image carries no HTTP client).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the whole probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the probe failed: `Display` is one line for the container's log.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing answered at the address.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// Where the probe went.
        address: SocketAddr,
        /// The connection error.
        reason: std::io::Error,
    },
    /// The server answered something other than 200.
    #[error("GET /healthz at {address} answered {status_line:?}")]
    Unhealthy {
        /// Where the probe went.
        address: SocketAddr,
        /// The answer's status line.
        status_line: String,
    },
    /// No complete answer in time.
    #[error("GET /healthz at {address} did not answer within {PROBE_TIMEOUT:?}")]
    Timeout {
        /// Where the probe went.
        address: SocketAddr,
    },
}

/// The address a probe on this machine reaches a listener bound to `listen` at: the
/// unspecified addresses become loopback (`[::]` is dual-stack, so IPv4 loopback works
/// even where IPv6 is off).
pub fn local_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip == Ipv6Addr::LOCALHOST => IpAddr::V6(ip),
        other => other,
    };
    SocketAddr::new(ip, listen.port())
}

/// `GET /healthz` at `address`; `Ok` on a 200.
pub async fn check_health(address: SocketAddr) -> Result<(), ProbeError> {
    match tokio::time::timeout(PROBE_TIMEOUT, ask(address)).await {
        Ok(answer) => answer,
        Err(_) => Err(ProbeError::Timeout { address }),
    }
}

async fn ask(address: SocketAddr) -> Result<(), ProbeError> {
    let connect = |reason| ProbeError::Connect { address, reason };
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(connect)?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(connect)?;
    let mut answer = Vec::with_capacity(256);
    let mut buffer = [0_u8; 256];
    // The status line is all the probe needs.
    while !answer.contains(&b'\n') && answer.len() < 4096 {
        let read = stream.read(&mut buffer).await.map_err(connect)?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(buffer.get(..read).unwrap_or_default());
    }
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    if status_line.starts_with("HTTP/1.1 200 ") || status_line.starts_with("HTTP/1.0 200 ") {
        Ok(())
    } else {
        Err(ProbeError::Unhealthy {
            address,
            status_line,
        })
    }
}
