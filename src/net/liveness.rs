//! Liveness of a link's connection, enforced by the kernel: a peer that cannot be heard from
//! for about the configured bound (its host is gone, the path is cut without a FIN or RST) has
//! its connection failed, whether the link is idle or has data in flight.
//!
//! * Idle links: TCP keepalive probes start after a third of the bound without anything
//!   received and repeat every sixth of it; enough of them that the last one is due at the
//!   bound.
//! * Data in flight (Linux): `TCP_USER_TIMEOUT` = the bound: sent data unacknowledged for that
//!   long fails the connection (and, with keepalive on, so do unanswered probes), instead of
//!   the OS default of about 15 minutes of retransmissions.
//!
//! Links that went idle together (a network that formed at once) would probe together; each
//! link's first probe is moved earlier by a random part of the first third, so that the probes
//! of thousands of links do not arrive in one burst (loopback and busy hosts drop part of
//! such a burst, and `TCP_USER_TIMEOUT` then fails healthy links).
//!
//! The peer's kernel answers the probes, so this works with every peer (Perl's too) and costs
//! nothing on the wire while the link carries traffic. The kernel takes whole seconds for the
//! probe times: the bound is rounded down to seconds, and at least 2 s are in effect.

use std::io;
use std::time::Duration;

/// When keepalive probes go out for a liveness bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probes {
    /// Silence before the first probe.
    pub idle: Duration,
    /// Between probes.
    pub interval: Duration,
    /// Unanswered probes that fail the connection.
    pub retries: u32,
}

impl Probes {
    /// The probes for `bound`: the first after a third of it, then every sixth, the last one
    /// due at the bound (whole seconds, at least 1 s each).
    pub fn for_bound(bound: Duration) -> Probes {
        let secs = bound.as_secs().max(2);
        let idle = (secs / 3).max(1);
        let interval = (secs / 6).max(1);
        let retries = (secs - idle).div_ceil(interval).max(1);
        Probes {
            idle: Duration::from_secs(idle),
            interval: Duration::from_secs(interval),
            retries: u32::try_from(retries).unwrap_or(u32::MAX),
        }
    }

    /// The same, the first probe `earlier` seconds sooner (at most a third of the idle time,
    /// never below 1 s), with as many more probes as keep the last one due at the bound.
    pub fn spread(self, bound: Duration, earlier: u64) -> Probes {
        let secs = bound.as_secs().max(2);
        let idle_secs = self.idle.as_secs();
        let idle = idle_secs.saturating_sub(earlier.min(idle_secs / 3)).max(1);
        let interval = self.interval.as_secs().max(1);
        let retries = (secs - idle).div_ceil(interval).max(1);
        Probes {
            idle: Duration::from_secs(idle),
            interval: self.interval,
            retries: u32::try_from(retries).unwrap_or(u32::MAX),
        }
    }
}

/// Turns keepalive on for `socket` and, with a bound, makes the kernel fail the connection
/// when its peer is not heard from for about that long (see the module docs). Without one, the
/// OS defaults apply (on Linux: probes after 2 hours idle).
pub(crate) fn apply(socket: socket2::SockRef<'_>, bound: Option<Duration>) -> io::Result<()> {
    socket.set_keepalive(true)?;
    let Some(bound) = bound else {
        return Ok(());
    };
    let probes = Probes::for_bound(bound);
    let earlier = rand::RngExt::random_range(&mut rand::rng(), 0..=probes.idle.as_secs() / 3);
    let probes = probes.spread(bound, earlier);
    let params = socket2::TcpKeepalive::new().with_time(probes.idle);
    #[cfg(any(
        target_os = "android",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "fuchsia",
        target_os = "illumos",
        target_os = "ios",
        target_os = "linux",
        target_os = "macos",
        target_os = "netbsd",
        target_os = "windows",
    ))]
    let params = params
        .with_interval(probes.interval)
        .with_retries(probes.retries);
    socket.set_tcp_keepalive(&params)?;
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    socket.set_tcp_user_timeout(Some(bound.max(Duration::from_millis(1))))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_probe_is_due_at_the_bound() {
        for secs in [2u64, 3, 5, 10, 30, 60, 7200] {
            let p = Probes::for_bound(Duration::from_secs(secs));
            let last = p.idle + p.interval * p.retries;
            assert!(p.idle >= Duration::from_secs(1), "{secs}: {p:?}");
            assert!(p.interval >= Duration::from_secs(1), "{secs}: {p:?}");
            assert!(
                last >= Duration::from_secs(secs) && last < Duration::from_secs(secs) + p.interval,
                "{secs}: {p:?}"
            );
        }
        assert_eq!(
            Probes::for_bound(Duration::from_secs(30)),
            Probes {
                idle: Duration::from_secs(10),
                interval: Duration::from_secs(5),
                retries: 4
            }
        );
        // Spread: the first probe up to a third earlier, the last one still due at the bound.
        let p = Probes::for_bound(Duration::from_secs(30));
        for earlier in 0..10 {
            let s = p.spread(Duration::from_secs(30), earlier);
            assert!(
                s.idle >= Duration::from_secs(7) && s.idle <= p.idle,
                "{s:?}"
            );
            let last = s.idle + s.interval * s.retries;
            assert!(
                last >= Duration::from_secs(30) && last < Duration::from_secs(35),
                "{s:?}"
            );
        }
        // Below the kernel's whole seconds: 2 s in effect.
        assert_eq!(
            Probes::for_bound(Duration::from_millis(300)),
            Probes::for_bound(Duration::from_secs(2))
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_socket_gets_the_probes_and_the_user_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        apply(
            socket2::SockRef::from(&stream),
            Some(Duration::from_secs(3)),
        )
        .unwrap();
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(1));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 2);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(3))
        );
        // Without a bound: keepalive on, the OS's timings untouched.
        let other = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let before = socket2::SockRef::from(&other).tcp_keepalive_time().unwrap();
        apply(socket2::SockRef::from(&other), None).unwrap();
        let sock = socket2::SockRef::from(&other);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), before);
        assert_eq!(sock.tcp_user_timeout().unwrap(), None);
    }
}
