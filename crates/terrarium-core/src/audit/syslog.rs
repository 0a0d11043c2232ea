//! The syslog sink: RFC 5424 messages over UDP (one datagram each) or TCP (octet-counted
//! framing, RFC 6587), for shipping the audit trail off the host.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

/// RFC 5424 facility 13: "log audit".
const FACILITY: u8 = 13;
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
}

#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("expected udp://HOST:PORT or tcp://HOST:PORT, got {0:?}")]
    BadUrl(String),
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("syslog: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Syslog {
    protocol: Protocol,
    addr: SocketAddr,
    udp: Option<UdpSocket>,
    tcp: Option<TcpStream>,
    hostname: String,
    procid: u32,
}

pub fn parse_url(url: &str) -> Result<(Protocol, String), SyslogError> {
    let (proto, rest) = url
        .split_once("://")
        .ok_or_else(|| SyslogError::BadUrl(url.into()))?;
    let protocol = match proto {
        "udp" => Protocol::Udp,
        "tcp" => Protocol::Tcp,
        _ => return Err(SyslogError::BadUrl(url.into())),
    };
    if rest.is_empty() || !rest.contains(':') {
        return Err(SyslogError::BadUrl(url.into()));
    }
    Ok((protocol, rest.to_string()))
}

/// Severity for an audit level name.
fn severity(level: &str) -> u8 {
    match level {
        "error" => 3,
        "warn" => 4,
        "info" => 6,
        _ => 7,
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`.
pub fn format(
    level: &str,
    timestamp: &str,
    hostname: &str,
    procid: u32,
    msgid: &str,
    msg: &str,
) -> String {
    let pri = u16::from(FACILITY) * 8 + u16::from(severity(level));
    let clean = |s: &str, max: usize| -> String {
        let s: String = s
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(max)
            .collect();
        if s.is_empty() { "-".into() } else { s }
    };
    format!(
        "<{pri}>1 {} {} terrarium {procid} {} - {msg}",
        clean(timestamp, 64),
        clean(hostname, 255),
        clean(msgid, 32)
    )
}

impl Syslog {
    pub fn connect(url: &str) -> Result<Syslog, SyslogError> {
        let (protocol, target) = parse_url(url)?;
        let addr = target
            .to_socket_addrs()
            .map_err(|_| SyslogError::Resolve(target.clone()))?
            .next()
            .ok_or_else(|| SyslogError::Resolve(target.clone()))?;
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "-".into());
        let mut s = Syslog {
            protocol,
            addr,
            udp: None,
            tcp: None,
            hostname,
            procid: std::process::id(),
        };
        s.reconnect()?;
        Ok(s)
    }

    fn reconnect(&mut self) -> Result<(), SyslogError> {
        match self.protocol {
            Protocol::Udp => {
                let bind = if self.addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let sock = UdpSocket::bind(bind)?;
                sock.connect(self.addr)?;
                self.udp = Some(sock);
            }
            Protocol::Tcp => {
                let stream = TcpStream::connect_timeout(&self.addr, TIMEOUT)?;
                stream.set_write_timeout(Some(TIMEOUT))?;
                self.tcp = Some(stream);
            }
        }
        Ok(())
    }

    pub fn send(
        &mut self,
        level: &str,
        timestamp: &str,
        msgid: &str,
        msg: &str,
    ) -> Result<(), SyslogError> {
        let line = format(level, timestamp, &self.hostname, self.procid, msgid, msg);
        match self.protocol {
            Protocol::Udp => {
                if let Some(sock) = &self.udp {
                    sock.send(line.as_bytes())?;
                }
                Ok(())
            }
            Protocol::Tcp => {
                let frame = format!("{} {line}", line.len());
                let first = self.tcp.as_mut().map(|s| s.write_all(frame.as_bytes()));
                if !matches!(first, Some(Ok(()))) {
                    // One reconnect: a collector restart should not lose the trail.
                    self.reconnect()?;
                    if let Some(s) = self.tcp.as_mut() {
                        s.write_all(frame.as_bytes())?;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc5424() {
        let m = format(
            "warn",
            "2026-11-23T06:12:09.005Z",
            "host a",
            42,
            "terraform_operation",
            "{\"x\":1}",
        );
        assert_eq!(
            m,
            "<108>1 2026-11-23T06:12:09.005Z hosta terrarium 42 terraform_operation - {\"x\":1}"
        );
    }

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_url("udp://127.0.0.1:514").unwrap(),
            (Protocol::Udp, "127.0.0.1:514".into())
        );
        assert!(parse_url("http://x:1").is_err());
        assert!(parse_url("tcp://nohost").is_err());
    }
}
