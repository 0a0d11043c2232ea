//! Rate limiting (token buckets, `governor`) per client IP and per principal, and the client
//! IP itself: the peer address, or `X-Forwarded-For` when the peer is a trusted proxy.
//!
//! The IP limit applies before authentication, so failed attempts count too and a token cannot
//! be guessed at line rate; the principal limit applies after it, so one caller behind many
//! addresses is still one caller.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

pub(crate) struct Limiters {
    per_ip: Keyed,
    per_principal: Keyed,
    burst: u32,
    clock: DefaultClock,
    trusted_proxies: Vec<IpAddr>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow { limit: u32, remaining: u32 },
    Deny { limit: u32, retry_after_secs: u64 },
}

impl Limiters {
    pub(crate) fn new(per_sec: u32, burst: u32, trusted_proxies: Vec<IpAddr>) -> Limiters {
        let rate = NonZeroU32::new(per_sec.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst_nz = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst_nz);
        Limiters {
            per_ip: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            per_principal: RateLimiter::keyed(quota)
                .with_middleware::<StateInformationMiddleware>(),
            burst: burst_nz.get(),
            clock: DefaultClock::default(),
            trusted_proxies,
        }
    }

    fn check(&self, limiter: &Keyed, key: &str) -> Decision {
        match limiter.check_key(&key.to_string()) {
            Ok(state) => Decision::Allow {
                limit: self.burst,
                remaining: state.remaining_burst_capacity(),
            },
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision::Deny {
                    limit: self.burst,
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                }
            }
        }
    }

    pub(crate) fn check_ip(&self, ip: &str) -> Decision {
        self.check(&self.per_ip, ip)
    }

    pub(crate) fn check_principal(&self, principal: &str) -> Decision {
        self.check(&self.per_principal, principal)
    }

    /// Forgets idle keys, so the tables do not grow with every address ever seen.
    pub(crate) fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_principal.retain_recent();
    }

    /// The client's address: `X-Forwarded-For` is believed only from a trusted proxy, and then
    /// the right-most address that is not itself a trusted proxy is the client.
    pub(crate) fn client_ip(&self, peer: SocketAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer_ip = peer.ip();
        if !self.trusted_proxies.contains(&peer_ip) {
            return peer_ip;
        }
        forwarded_for
            .into_iter()
            .flat_map(|h| h.split(','))
            .rev()
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .find(|ip| !self.trusted_proxies.contains(ip))
            .unwrap_or(peer_ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_with_a_retry_time() {
        let l = Limiters::new(1, 3, vec![]);
        for i in 0..3 {
            assert!(
                matches!(l.check_ip("1.2.3.4"), Decision::Allow { .. }),
                "request {i}"
            );
        }
        match l.check_ip("1.2.3.4") {
            Decision::Deny {
                limit,
                retry_after_secs,
            } => {
                assert_eq!(limit, 3);
                assert!((1..=2).contains(&retry_after_secs));
            }
            d => panic!("{d:?}"),
        }
        assert!(
            matches!(l.check_ip("5.6.7.8"), Decision::Allow { .. }),
            "keys are independent"
        );
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let l = Limiters::new(1, 1, vec![proxy]);
        let from_proxy = SocketAddr::new(proxy, 1);
        let from_client = SocketAddr::new("192.0.2.9".parse().unwrap(), 1);
        assert_eq!(
            l.client_ip(from_proxy, Some("198.51.100.7, 10.0.0.1"))
                .to_string(),
            "198.51.100.7"
        );
        assert_eq!(
            l.client_ip(from_client, Some("198.51.100.7")).to_string(),
            "192.0.2.9",
            "spoofed header"
        );
        assert_eq!(l.client_ip(from_proxy, None), proxy);
    }
}
