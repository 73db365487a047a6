//! Seeds, kept as Perl 2.x keeps them (AEMP-NOTES §4.6): a link to every seed for as long as
//! the node runs, each missing one dialled again with back-off (starting at 0.6–1.2 s,
//! doubling, capped), the back-off restarted whenever a seed link goes down. A seed that turns
//! out to be ourselves is dropped (and makes us a global node). Plain state: the registry
//! dials and keeps the timer.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::RngExt as _;

/// See the module docs.
pub(crate) struct Seeds {
    /// Seed address → the node it turned out to be (learnt from its greeting).
    nodes: BTreeMap<String, Option<String>>,
    /// The delay before the next round.
    retry: Duration,
    /// The longest delay between rounds.
    max: Duration,
}

impl Seeds {
    pub fn new(max: Duration) -> Seeds {
        Seeds {
            nodes: BTreeMap::new(),
            retry: Duration::ZERO,
            max,
        }
    }

    /// More seed addresses to keep linked.
    pub fn add(&mut self, addrs: impl IntoIterator<Item = String>) {
        for addr in addrs {
            self.nodes.entry(addr).or_default();
        }
    }

    /// Whether `addr` is one of our seeds.
    pub fn is_seed(&self, addr: &str) -> bool {
        self.nodes.contains_key(addr)
    }

    /// Whether `node` is one of our seeds.
    pub fn is_seed_node(&self, node: &str) -> bool {
        self.nodes.values().any(|n| n.as_deref() == Some(node))
    }

    /// The node the seed at `addr` turned out to be.
    pub fn node_at(&self, addr: &str) -> Option<&str> {
        self.nodes.get(addr)?.as_deref()
    }

    /// The seed at `addr` is `node`. Returns whether that is news.
    pub fn learn(&mut self, addr: &str, node: &str) -> bool {
        match self.nodes.get_mut(addr) {
            Some(known) if known.as_deref() != Some(node) => {
                *known = Some(node.to_owned());
                true
            }
            _ => false,
        }
    }

    /// The seed at `addr` is ourselves: not a seed to keep.
    pub fn drop_seed(&mut self, addr: &str) {
        self.nodes.remove(addr);
    }

    /// The seed addresses to dial now: those whose node is not up (per `up`) and that no
    /// dial of ours is reaching already (per `dialling`).
    pub fn due(&self, up: impl Fn(&str) -> bool, dialling: impl Fn(&str) -> bool) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(addr, node)| !node.as_deref().is_some_and(&up) && !dialling(addr))
            .map(|(addr, _)| addr.clone())
            .collect()
    }

    /// Whether a seed's node is not up.
    pub fn missing(&self, up: impl Fn(&str) -> bool) -> bool {
        self.nodes.values().any(|n| !n.as_deref().is_some_and(&up))
    }

    /// The delay before the round after this one (doubling, capped).
    pub fn next_delay(&mut self) -> Duration {
        self.retry = (self.retry * 2).clamp(Duration::from_millis(600), self.max);
        self.retry
    }

    /// A seed link went down: start the back-off afresh (Perl's `seed_again`).
    pub fn restart(&mut self) {
        let base = rand::rng().random_range(0.6..1.2);
        self.retry = Duration::from_secs_f64(base / 2.0).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_skips_up_and_dialling_seeds_and_back_off_doubles_to_the_cap() {
        let mut s = Seeds::new(Duration::from_secs(5));
        s.add(["a:1".into(), "b:2".into(), "c:3".into()]);
        assert!(s.learn("a:1", "A"));
        assert!(!s.learn("a:1", "A"));
        assert!(s.is_seed_node("A") && !s.is_seed_node("B"));
        let due = s.due(|n| n == "A", |addr| addr == "b:2");
        assert_eq!(due, vec!["c:3".to_string()]);
        assert!(s.missing(|n| n == "A"));
        s.drop_seed("b:2");
        s.drop_seed("c:3");
        assert!(!s.missing(|n| n == "A"));
        s.restart();
        let first = s.next_delay();
        assert!(first >= Duration::from_millis(600) && first <= Duration::from_millis(1200));
        let mut last = first;
        for _ in 0..10 {
            last = s.next_delay();
        }
        assert_eq!(last, Duration::from_secs(5));
    }
}
