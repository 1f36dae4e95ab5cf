//! Who may use the gateway: the bearer token (when one is set), and the
//! `Origin` check that keeps web pages from reaching it through DNS
//! rebinding (a MUST of the MCP spec for local servers). Also the rule that
//! a non-loopback listener needs a token.

use hyper::header::{AUTHORIZATION, HeaderMap, ORIGIN};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

/// Why a request was turned away before it was routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("a bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("requests from this Origin are not accepted")]
    Forbidden,
}

/// The checks every request passes before it is routed.
#[derive(Clone)]
pub struct Access {
    /// SHA-256 of the token: comparing digests takes the same time whatever
    /// the length of what the client sent.
    token: Option<[u8; 32]>,
    /// The listener's own address, an acceptable `Origin` too (unless it is
    /// the unspecified address, which no browser can be at).
    own: SocketAddr,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.map(|_| "<redacted>"))
            .field("own", &self.own)
            .finish()
    }
}

impl Access {
    pub fn new(token: Option<&str>, own: SocketAddr) -> Access {
        Access {
            token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            own,
        }
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<(), Denial> {
        if let Some(want) = &self.token {
            let sent = headers
                .get(AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
                .ok_or(Denial::Unauthorized)?;
            let got: [u8; 32] = Sha256::digest(sent).into();
            // Every byte is compared, whichever differs first.
            let diff = want
                .iter()
                .zip(got.iter())
                .fold(0u8, |d, (a, b)| d | (a ^ b));
            if diff != 0 {
                return Err(Denial::Unauthorized);
            }
        }
        match headers.get(ORIGIN) {
            None => Ok(()),
            Some(origin) => match origin.to_str() {
                Ok(o) if self.origin_allowed(o) => Ok(()),
                _ => Err(Denial::Forbidden),
            },
        }
    }

    /// Whether the gateway holds a token, and so strips the client's
    /// `Authorization` before forwarding: the gateway's token is not the
    /// upstream's.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// A loopback origin on any port, or the listener's own address. Never
    /// the request's `Host`: under DNS rebinding the attacker's name is both
    /// the page's origin and the `Host` the browser sends.
    fn origin_allowed(&self, origin: &str) -> bool {
        let Ok(url) = url::Url::parse(origin) else {
            return false;
        };
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        match url.host() {
            Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => true,
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => true,
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => true,
            Some(url::Host::Ipv4(ip)) => {
                !self.own.ip().is_unspecified()
                    && self.own.ip() == ip
                    && url.port_or_known_default() == Some(self.own.port())
            }
            Some(url::Host::Ipv6(ip)) => {
                !self.own.ip().is_unspecified()
                    && self.own.ip() == ip
                    && url.port_or_known_default() == Some(self.own.port())
            }
            _ => false,
        }
    }
}

/// Refuses a listener that anyone but this host could reach, unless a token
/// guards it.
pub fn check_listen(addr: SocketAddr, has_token: bool) -> Result<(), super::GatewayError> {
    if addr.ip().is_loopback() || has_token {
        Ok(())
    } else {
        Err(super::GatewayError::OpenListener(addr))
    }
}
