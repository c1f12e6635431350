//! The PROXY protocol (HAProxy's v1 text and v2 binary headers): a load balancer in front of
//! oxbridge prefixes each connection with the client's real address, so logs, audit events,
//! brute-force throttling and SMTP relay rules see the device rather than the balancer.
//!
//! The header is believed only from the configured trusted proxies: anyone else could claim
//! any address (and so match a relay rule). A listener with `proxy_protocol = true` refuses
//! connections from other addresses, and connections without a valid header.
//!
//! [`parse`] is sans-IO and bounded (a v1 line is at most 107 bytes, a v2 header at most
//! [`V2_MAX_PAYLOAD`] bytes after its 16-byte preamble); it tells the reader how many more
//! bytes it needs *at least*, so [`read_header`] never reads past the header into the
//! client's first bytes (a TLS ClientHello on an implicit-TLS port).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::{Config, ListenerConfig};

/// The v2 preamble's first 12 bytes.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (the specification's limit).
const V1_MAX: usize = 107;
/// The shortest v1 header: `PROXY UNKNOWN\r\n`.
const V1_MIN: usize = 15;
/// The largest v2 payload (addresses and TLVs) accepted; balancers send well under this.
pub const V2_MAX_PAYLOAD: usize = 1024;
/// The most bytes [`read_header`] ever holds.
const MAX_HEADER: usize = 16 + V2_MAX_PAYLOAD;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied connection from `source` to `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The balancer's own connection (v2 `LOCAL`, e.g. a health check), or one whose
    /// addresses it does not know (v1 `UNKNOWN`, v2 `UNSPEC`/Unix): keep the socket's
    /// address.
    Local,
}

/// Progress of [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Read at least `need` more bytes (and no more than that, to stay within the header).
    Incomplete { need: usize },
    /// A complete header of `consumed` bytes.
    Done {
        header: ProxyHeader,
        consumed: usize,
    },
}

/// Why a connection's header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("the connection does not start with a PROXY-protocol header")]
    Missing,
    #[error("malformed PROXY-protocol header: {0}")]
    Malformed(&'static str),
    #[error("PROXY-protocol header longer than the limit")]
    TooLong,
    #[error("the connection ended inside the PROXY-protocol header")]
    Truncated,
}

impl ProxyError {
    /// A label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProxyError::Missing => "missing",
            ProxyError::Malformed(_) | ProxyError::TooLong => "invalid",
            ProxyError::Truncated => "truncated",
        }
    }
}

/// Parses the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let v2_prefix = buf.len().min(V2_SIGNATURE.len());
    if buf[..v2_prefix] == V2_SIGNATURE[..v2_prefix] && !buf.is_empty() {
        return parse_v2(buf);
    }
    let v1_prefix = buf.len().min(6);
    if buf[..v1_prefix] == b"PROXY "[..v1_prefix] && !buf.is_empty() {
        return parse_v1(buf);
    }
    if buf.is_empty() {
        return Ok(Parsed::Incomplete { need: V1_MIN });
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < V1_MIN {
        return Ok(Parsed::Incomplete {
            need: V1_MIN - buf.len(),
        });
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(ProxyError::TooLong);
        }
        // A line feed alone would end a line for a lenient reader: refuse it outright.
        if buf.contains(&b'\n') {
            return Err(ProxyError::Malformed("line ends without CR"));
        }
        return Ok(Parsed::Incomplete { need: 1 });
    };
    let consumed = end + 2;
    if consumed > V1_MAX {
        return Err(ProxyError::TooLong);
    }
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or("");
    if family == "UNKNOWN" {
        // Whatever follows is to be ignored, per the specification.
        return Ok(Parsed::Done {
            header: ProxyHeader::Local,
            consumed,
        });
    }
    let fields: Vec<&str> = fields.collect();
    let [source, destination, source_port, destination_port] = fields[..] else {
        return Err(ProxyError::Malformed(
            "v1 needs four fields after the family",
        ));
    };
    let (source, destination): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            v1_address::<Ipv4Addr>(source)?.into(),
            v1_address::<Ipv4Addr>(destination)?.into(),
        ),
        "TCP6" => (
            v1_address::<Ipv6Addr>(source)?.into(),
            v1_address::<Ipv6Addr>(destination)?.into(),
        ),
        _ => {
            return Err(ProxyError::Malformed(
                "v1 family is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    Ok(Parsed::Done {
        header: ProxyHeader::Proxied {
            source: SocketAddr::new(source, v1_port(source_port)?),
            destination: SocketAddr::new(destination, v1_port(destination_port)?),
        },
        consumed,
    })
}

fn v1_address<T: std::str::FromStr>(text: &str) -> Result<T, ProxyError> {
    text.parse()
        .map_err(|_| ProxyError::Malformed("v1 address does not match its family"))
}

fn v1_port(text: &str) -> Result<u16, ProxyError> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    match text.parse() {
        Ok(port) if digits && !leading_zero => Ok(port),
        _ => Err(ProxyError::Malformed(
            "v1 port is not a number from 0 to 65535",
        )),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete {
            need: 16 - buf.len(),
        });
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    if version != 2 {
        return Err(ProxyError::Malformed("v2 version is not 2"));
    }
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if length > V2_MAX_PAYLOAD {
        return Err(ProxyError::TooLong);
    }
    let consumed = 16 + length;
    if buf.len() < consumed {
        return Ok(Parsed::Incomplete {
            need: consumed - buf.len(),
        });
    }
    let payload = &buf[16..consumed];
    let header = match command {
        // LOCAL: the balancer speaking for itself; addresses, if any, are ignored.
        0x0 => ProxyHeader::Local,
        0x1 => match buf[13] {
            // UNSPEC, or Unix sockets: no IP address to report.
            0x00 | 0x31 | 0x32 => ProxyHeader::Local,
            0x11 => {
                let a = payload
                    .get(..12)
                    .ok_or(ProxyError::Malformed("v2 TCP4 addresses are short"))?;
                let ip = |at: usize| Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]);
                let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
                ProxyHeader::Proxied {
                    source: SocketAddr::new(ip(0).into(), port(8)),
                    destination: SocketAddr::new(ip(4).into(), port(10)),
                }
            }
            0x21 => {
                let a = payload
                    .get(..36)
                    .ok_or(ProxyError::Malformed("v2 TCP6 addresses are short"))?;
                let ip = |at: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&a[at..at + 16]);
                    Ipv6Addr::from(octets)
                };
                let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
                ProxyHeader::Proxied {
                    source: SocketAddr::new(ip(0).into(), port(32)),
                    destination: SocketAddr::new(ip(16).into(), port(34)),
                }
            }
            0x12 | 0x22 => return Err(ProxyError::Malformed("v2 header is for UDP")),
            _ => return Err(ProxyError::Malformed("v2 address family unknown")),
        },
        _ => return Err(ProxyError::Malformed("v2 command is not LOCAL or PROXY")),
    };
    Ok(Parsed::Done { header, consumed })
}

/// Reads exactly one header from `stream`, never a byte past it. The caller bounds the
/// time it may take.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut buf = [0u8; MAX_HEADER];
    let mut filled = 0;
    loop {
        match parse(&buf[..filled])? {
            Parsed::Done { header, .. } => return Ok(header),
            Parsed::Incomplete { need } => {
                // `parse` asks for at most what completes the longest header it accepts.
                let end = (filled + need).min(MAX_HEADER);
                if end == filled {
                    return Err(ProxyError::TooLong);
                }
                stream
                    .read_exact(&mut buf[filled..end])
                    .await
                    .map_err(|_| ProxyError::Truncated)?;
                filled = end;
            }
        }
    }
}

/// Which peers a PROXY-protocol listener believes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPolicy {
    trusted: Vec<IpNet>,
}

impl ProxyPolicy {
    /// The policy of `spec`, or `None` when it does not expect PROXY headers. Its own
    /// `trusted_proxies` win over the global list. Invalid entries were refused by
    /// [`Config::validate`].
    pub fn for_listener(config: &Config, spec: &ListenerConfig) -> Option<Arc<ProxyPolicy>> {
        if !spec.proxy_protocol {
            return None;
        }
        let list = spec
            .trusted_proxies
            .as_ref()
            .unwrap_or(&config.trusted_proxies);
        let trusted = list.iter().filter_map(|n| parse_network(n).ok()).collect();
        Some(Arc::new(ProxyPolicy { trusted }))
    }

    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    /// Whether `peer` may send a header.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted.iter().any(|net| net.contains(&peer))
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a bare address meaning that one host.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        if net != net.trunc() {
            return Err(format!(
                "network {text:?} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is not an address or CIDR like 10.0.0.0/8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> (ProxyHeader, usize) {
        match parse(buf) {
            Ok(Parsed::Done { header, consumed }) => (header, consumed),
            other => panic!("expected a header, got {other:?}"),
        }
    }

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6_headers_parse_and_stop_at_the_crlf() {
        let (header, consumed) =
            done(b"PROXY TCP4 203.0.113.7 192.0.2.10 51234 993\r\n\x16\x03\x01");
        assert_eq!(header, proxied("203.0.113.7:51234", "192.0.2.10:993"));
        assert_eq!(consumed, 45);
        let (header, _) = done(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n");
        assert_eq!(header, proxied("[2001:db8::7]:65535", "[2001:db8::1]:0"));
        let (header, consumed) = done(b"PROXY UNKNOWN ff ee\r\nA1 CAPABILITY\r\n");
        assert_eq!((header, consumed), (ProxyHeader::Local, 21));
    }

    #[test]
    fn v1_is_read_a_byte_at_a_time_after_the_minimum() {
        let full = b"PROXY TCP4 10.1.2.3 10.0.0.1 1000 25\r\n";
        assert_eq!(parse(b""), Ok(Parsed::Incomplete { need: 15 }));
        assert_eq!(parse(b"PRO"), Ok(Parsed::Incomplete { need: 12 }));
        for end in 15..full.len() {
            assert_eq!(parse(&full[..end]), Ok(Parsed::Incomplete { need: 1 }));
        }
        assert!(matches!(parse(full), Ok(Parsed::Done { .. })));
    }

    #[test]
    fn v1_refuses_what_the_specification_does_not_allow() {
        for bad in [
            &b"PROXY TCP4 10.1.2.3 10.0.0.1 1000\r\n"[..],
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1000 25\r\n",
            b"PROXY TCP6 10.1.2.3 10.0.0.1 1000 25\r\n",
            b"PROXY TCP4 10.1.2.3 10.0.0.1 65536 25\r\n",
            b"PROXY TCP4 10.1.2.3 10.0.0.1 +100 25\r\n",
            b"PROXY TCP4 10.1.2.3 10.0.0.1 0100 25\r\n",
            b"PROXY TCP4  10.1.2.3 10.0.0.1 100 25\r\n",
            b"PROXY UDP4 10.1.2.3 10.0.0.1 100 25\r\n",
            b"PROXY TCP4 10.1.2.3 10.0.0.1 100 25\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::Malformed(_))),
                "{:?} gave {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
        assert_eq!(parse(b"* OK hello\r\n"), Err(ProxyError::Missing));
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Err(ProxyError::Missing));
    }

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family);
        header.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        header.extend_from_slice(payload);
        header
    }

    #[test]
    fn v2_tcp4_and_tcp6_headers_parse_with_tlvs_skipped() {
        let mut payload = vec![203, 0, 113, 7, 192, 0, 2, 10, 0xc8, 0x22, 0x03, 0xe1];
        // A TLV (PP2_TYPE_AUTHORITY "mail.contoso.com") follows the addresses.
        payload.extend_from_slice(&[0x02, 0x00, 0x10]);
        payload.extend_from_slice(b"mail.contoso.com");
        let mut bytes = v2(1, 0x11, &payload);
        let header_len = bytes.len();
        bytes.extend_from_slice(b"\x16\x03\x01");
        let (header, consumed) = done(&bytes);
        assert_eq!(header, proxied("203.0.113.7:51234", "192.0.2.10:993"));
        assert_eq!(consumed, header_len);

        let mut payload = Vec::new();
        payload.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        payload.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        payload.extend_from_slice(&[0x01, 0xbb, 0x00, 0x19]);
        let (header, _) = done(&v2(1, 0x21, &payload));
        assert_eq!(header, proxied("[2001:db8::7]:443", "[2001:db8::1]:25"));
    }

    #[test]
    fn v2_local_and_unspec_keep_the_socket_address() {
        assert_eq!(done(&v2(0, 0x00, &[])).0, ProxyHeader::Local);
        assert_eq!(done(&v2(0, 0x11, &[1; 12])).0, ProxyHeader::Local);
        assert_eq!(done(&v2(1, 0x00, &[])).0, ProxyHeader::Local);
    }

    #[test]
    fn v2_asks_for_exactly_the_rest_of_the_header() {
        let bytes = v2(1, 0x11, &[10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2]);
        assert_eq!(parse(&bytes[..3]), Ok(Parsed::Incomplete { need: 13 }));
        assert_eq!(parse(&bytes[..16]), Ok(Parsed::Incomplete { need: 12 }));
        assert_eq!(parse(&bytes[..27]), Ok(Parsed::Incomplete { need: 1 }));
    }

    #[test]
    fn v2_refuses_bad_versions_commands_families_and_sizes() {
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(matches!(
            parse(&wrong_version),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2(2, 0x11, &[0; 12])),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2(1, 0x12, &[0; 12])),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2(1, 0x41, &[0; 12])),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2(1, 0x11, &[0; 11])),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2(1, 0x21, &[0; 35])),
            Err(ProxyError::Malformed(_))
        ));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Err(ProxyError::TooLong));
    }

    #[tokio::test]
    async fn read_header_leaves_the_clients_bytes_unread() {
        let mut bytes = b"PROXY TCP4 203.0.113.7 192.0.2.10 51234 993\r\n".to_vec();
        bytes.extend_from_slice(b"A1 CAPABILITY\r\n");
        let mut reader = &bytes[..];
        let header = read_header(&mut reader).await.unwrap();
        assert_eq!(header, proxied("203.0.113.7:51234", "192.0.2.10:993"));
        assert_eq!(reader, b"A1 CAPABILITY\r\n");

        let mut bytes = v2(1, 0x11, &[10, 0, 0, 9, 10, 0, 0, 1, 0x30, 0x39, 0, 25]);
        bytes.extend_from_slice(b"EHLO x\r\n");
        let mut reader = &bytes[..];
        let header = read_header(&mut reader).await.unwrap();
        assert_eq!(header, proxied("10.0.0.9:12345", "10.0.0.1:25"));
        assert_eq!(reader, b"EHLO x\r\n");

        let mut short = &b"PROXY TCP4 203.0.113.7"[..];
        assert_eq!(read_header(&mut short).await, Err(ProxyError::Truncated));
    }

    #[test]
    fn trust_follows_the_listener_then_the_global_list() {
        let config = Config::parse(
            r#"
            trusted_proxies = ["10.0.0.0/8"]
            [[listener]]
            protocol = "imap"
            listen = "127.0.0.1:993"
            tls = "implicit"
            proxy_protocol = true
            [[listener]]
            protocol = "smtp"
            listen = "127.0.0.1:587"
            tls = "starttls"
            proxy_protocol = true
            trusted_proxies = ["192.0.2.1"]
            [[listener]]
            protocol = "pop3"
            listen = "127.0.0.1:995"
            tls = "implicit"
            "#,
        )
        .unwrap();
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let imap = ProxyPolicy::for_listener(&config, &config.listeners[0]).unwrap();
        assert!(imap.trusts(ip("10.9.8.7")) && imap.trusts(ip("::ffff:10.1.1.1")));
        assert!(!imap.trusts(ip("192.0.2.1")));
        let smtp = ProxyPolicy::for_listener(&config, &config.listeners[1]).unwrap();
        assert!(smtp.trusts(ip("192.0.2.1")) && !smtp.trusts(ip("10.9.8.7")));
        assert!(ProxyPolicy::for_listener(&config, &config.listeners[2]).is_none());
    }

    #[test]
    fn bad_trust_settings_are_reported() {
        let config = Config::parse(
            r#"
            trusted_proxies = ["10.0.0.1/8", "nonsense"]
            [[listener]]
            protocol = "imap"
            listen = "127.0.0.1:993"
            tls = "implicit"
            proxy_protocol = true
            trusted_proxies = []
            [[listener]]
            protocol = "imap"
            listen = "127.0.0.1:994"
            tls = "implicit"
            trusted_proxies = ["10.0.0.0/8"]
            "#,
        )
        .unwrap();
        let all = config.validate().join("\n");
        for needle in [
            "did you mean 10.0.0.0/8",
            "\"nonsense\" is not an address",
            "proxy_protocol = true needs trusted_proxies",
            "trusted_proxies has no meaning without proxy_protocol",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
    }
}
