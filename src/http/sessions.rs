//! Which principal owns each MCP session, and how many sessions each principal holds.
//!
//! rmcp's session manager knows sessions, not callers: any request that carries a session id
//! is routed into that session. A session id is sent in headers, shows up in proxies' logs and
//! in browser tooling, so it must not be a capability on its own. The front door records the
//! principal that opened a session (from the `Mcp-Session-Id` header of its initialize
//! response) and lets only that principal use it; for anyone else the session does not exist
//! (the same 404 as an unknown id, so that ids are not confirmed). The same record gives the
//! per-principal session cap, so one caller cannot take every session the server allows.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// What a request carrying a session id may do with it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Access {
    /// The session is this principal's.
    Owner,
    /// Unknown, ended, or someone else's: answered as not found.
    NotFound,
}

#[derive(Default)]
struct Inner {
    /// Session id → the principal that opened it, and when it was recorded (a [`Mark`]).
    owners: HashMap<String, (String, u64)>,
    /// Counts recordings, so that a pruning pass spares sessions recorded after it began.
    recorded: u64,
    /// Sessions being opened right now, per principal (an initialize in flight).
    opening: HashMap<String, usize>,
}

/// Why a new session was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Full {
    /// The server's cap is reached.
    Server,
    /// The principal's own share is taken: it holds this many sessions.
    Principal(usize),
}

/// Taken before listing the live sessions: only sessions recorded before it can be missing
/// from that list because they ended (a later one may simply not have been listed yet).
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark(u64);

#[derive(Default)]
pub(super) struct Owners {
    inner: Mutex<Inner>,
}

/// A session being opened by a principal; counted against its cap until dropped.
pub(super) struct Opening<'a> {
    owners: &'a Owners,
    principal: String,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut inner = self.owners.lock();
        if let Some(n) = inner.opening.get_mut(&self.principal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.opening.remove(&self.principal);
            }
        }
    }
}

impl Opening<'_> {
    /// The session was created: it is this principal's from now on.
    pub(super) fn opened(self, session_id: &str) {
        let mut inner = self.owners.lock();
        inner.recorded += 1;
        let at = inner.recorded;
        inner
            .owners
            .insert(session_id.to_string(), (self.principal.clone(), at));
    }
}

impl Owners {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn access(&self, session_id: &str, principal: &str) -> Access {
        match self.lock().owners.get(session_id) {
            Some((owner, _)) if owner == principal => Access::Owner,
            _ => Access::NotFound,
        }
    }

    pub(super) fn mark(&self) -> Mark {
        Mark(self.lock().recorded)
    }

    /// Forgets sessions the session manager no longer has (closed or expired): `live` was
    /// listed after `mark` was taken.
    pub(super) fn retain_live(&self, mark: Mark, live: &HashSet<String>) {
        self.lock()
            .owners
            .retain(|id, (_, at)| *at > mark.0 || live.contains(id));
    }

    /// Forgets one session (its owner deleted it).
    pub(super) fn forget(&self, session_id: &str) {
        self.lock().owners.remove(session_id);
    }

    /// Reserves a new session for `principal` if the server, with its open sessions and those
    /// being opened, is below `server_cap`, and the principal holds fewer than `cap` (open and
    /// being opened). Every session is opened through here, so the record counts them all
    /// (once: a session moves from being opened to open in [`Opening::opened`]).
    pub(super) fn try_open(
        &self,
        principal: &str,
        cap: usize,
        server_cap: usize,
    ) -> Result<Opening<'_>, Full> {
        let mut inner = self.lock();
        if inner.owners.len() + inner.opening.values().sum::<usize>() >= server_cap {
            return Err(Full::Server);
        }
        let held = inner
            .owners
            .values()
            .filter(|(o, _)| o == principal)
            .count()
            + inner.opening.get(principal).copied().unwrap_or(0);
        if held >= cap {
            return Err(Full::Principal(held));
        }
        *inner.opening.entry(principal.to_string()).or_default() += 1;
        Ok(Opening {
            owners: self,
            principal: principal.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_belongs_to_the_principal_that_opened_it() {
        let o = Owners::default();
        o.try_open("alice", 4, 100).unwrap().opened("s1");
        assert_eq!(o.access("s1", "alice"), Access::Owner);
        assert_eq!(o.access("s1", "bob"), Access::NotFound);
        assert_eq!(o.access("s2", "alice"), Access::NotFound);
        o.forget("s1");
        assert_eq!(o.access("s1", "alice"), Access::NotFound);
    }

    #[test]
    fn the_cap_counts_open_and_opening_sessions_per_principal() {
        let o = Owners::default();
        o.try_open("alice", 2, 100).unwrap().opened("s1");
        let pending = o.try_open("alice", 2, 100).unwrap();
        assert_eq!(o.try_open("alice", 2, 100).err(), Some(Full::Principal(2)));
        assert!(o.try_open("bob", 2, 100).is_ok(), "bob has his own share");
        // An initialize that did not create a session gives its reservation back.
        drop(pending);
        let again = o.try_open("alice", 2, 100).unwrap();
        again.opened("s2");
        assert!(o.try_open("alice", 2, 100).is_err());
        // Expired sessions stop counting.
        let mark = o.mark();
        o.retain_live(mark, &HashSet::from(["s2".to_string()]));
        assert!(o.try_open("alice", 2, 100).is_ok());
        assert_eq!(o.access("s1", "alice"), Access::NotFound);
    }

    #[test]
    fn sessions_being_opened_count_against_the_server_cap() {
        let o = Owners::default();
        o.try_open("alice", 4, 4).unwrap().opened("s1");
        let _a = o.try_open("alice", 4, 4).unwrap();
        let _b = o.try_open("bob", 4, 4).unwrap();
        let _c = o.try_open("carol", 4, 4).unwrap();
        assert_eq!(o.try_open("carol", 4, 4).err(), Some(Full::Server));
    }

    #[test]
    fn a_session_recorded_while_the_live_list_was_taken_is_kept() {
        let o = Owners::default();
        let mark = o.mark();
        let live = HashSet::new(); // listed before s1 existed
        o.try_open("alice", 2, 100).unwrap().opened("s1");
        o.retain_live(mark, &live);
        assert_eq!(o.access("s1", "alice"), Access::Owner);
    }
}
