//! Who holds the connection slots: at most a share per client address, and some kept for
//! addresses that have authenticated before (a client certificate the server's client CA
//! signed), so that no single address, and no crowd of unauthenticated ones, can take every
//! slot from kube-apiserver.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

/// How many authenticated addresses are remembered (the oldest is forgotten beyond it).
const PROVEN_REMEMBERED: usize = 1024;

/// The slots' holders, by client address.
pub struct Peers {
    per_peer: usize,
    /// Slots an address that never authenticated may take, all such addresses together.
    unproven_cap: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    held: HashMap<IpAddr, usize>,
    unproven_held: usize,
    /// Addresses that presented an accepted client certificate, and when they last did.
    proven: HashMap<IpAddr, Instant>,
}

/// Why a connection was refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already holds its share.
    PeerShare,
    /// It never authenticated, and the slots not kept for those who did are all held.
    Unproven,
}

impl Peers {
    /// `per_peer` slots per address; of `max` slots, `reserved` (at most half) are kept for
    /// addresses that have authenticated before (0 when the server has no client CA).
    pub fn new(max: usize, per_peer: usize, reserved: usize) -> Arc<Self> {
        Arc::new(Self {
            per_peer: per_peer.max(1),
            unproven_cap: max.saturating_sub(reserved.min(max / 2)).max(1),
            state: Mutex::default(),
        })
    }

    /// A slot for a connection from `ip`, or why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Held, Refusal> {
        let mut state = self.state.lock().expect("lock");
        let held = state.held.get(&ip).copied().unwrap_or(0);
        if held >= self.per_peer {
            return Err(Refusal::PeerShare);
        }
        let proven = state.proven.contains_key(&ip);
        if !proven {
            if state.unproven_held >= self.unproven_cap {
                return Err(Refusal::Unproven);
            }
            state.unproven_held += 1;
        }
        *state.held.entry(ip).or_default() += 1;
        Ok(Held {
            peers: self.clone(),
            ip,
            unproven: !proven,
        })
    }

    fn release(&self, ip: IpAddr, unproven: bool) {
        let mut state = self.state.lock().expect("lock");
        if unproven {
            state.unproven_held -= 1;
        }
        if let Some(held) = state.held.get_mut(&ip) {
            *held -= 1;
            if *held == 0 {
                state.held.remove(&ip);
            }
        }
    }
}

/// A held slot, given back when dropped.
pub struct Held {
    peers: Arc<Peers>,
    ip: IpAddr,
    unproven: bool,
}

impl Held {
    /// The client presented an accepted certificate: its address is remembered as
    /// authenticated, and this connection no longer counts against the unproven slots.
    pub fn authenticated(&mut self) {
        let mut state = self.peers.state.lock().expect("lock");
        if self.unproven {
            state.unproven_held -= 1;
            self.unproven = false;
        }
        if state.proven.len() >= PROVEN_REMEMBERED && !state.proven.contains_key(&self.ip) {
            let oldest = state
                .proven
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(ip, _)| *ip);
            if let Some(oldest) = oldest {
                state.proven.remove(&oldest);
            }
        }
        state.proven.insert(self.ip, Instant::now());
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.peers.release(self.ip, self.unproven);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn an_address_holds_at_most_its_share() {
        let peers = Peers::new(10, 2, 0);
        let (_a, _b) = (peers.admit(ip(1)).unwrap(), peers.admit(ip(1)).unwrap());
        assert_eq!(peers.admit(ip(1)).err(), Some(Refusal::PeerShare));
        assert!(
            peers.admit(ip(2)).is_ok(),
            "another address is not affected"
        );
    }

    #[test]
    fn a_closed_connection_gives_its_slot_back() {
        let peers = Peers::new(10, 1, 0);
        drop(peers.admit(ip(1)).unwrap());
        assert!(peers.admit(ip(1)).is_ok());
    }

    #[test]
    fn slots_are_kept_for_addresses_that_authenticated_before() {
        let peers = Peers::new(4, 4, 2);
        peers.admit(ip(1)).unwrap().authenticated();
        let held: Vec<_> = (2..4).map(|i| peers.admit(ip(i)).unwrap()).collect();
        assert_eq!(
            peers.admit(ip(4)).err(),
            Some(Refusal::Unproven),
            "unauthenticated addresses share the slots not kept"
        );
        let (_c, _d) = (peers.admit(ip(1)).unwrap(), peers.admit(ip(1)).unwrap());
        drop(held);
        assert!(peers.admit(ip(4)).is_ok());
    }

    #[test]
    fn an_authenticated_connection_stops_counting_as_unproven() {
        let peers = Peers::new(2, 2, 1);
        let mut first = peers.admit(ip(1)).unwrap();
        assert_eq!(peers.admit(ip(2)).err(), Some(Refusal::Unproven));
        first.authenticated();
        assert!(peers.admit(ip(2)).is_ok());
    }
}
