//! The phase and scope of every AccessToken, for the token counts in Organization and Group
//! status. One index for both status controllers, fed by the AccessToken controller's watch
//! ([`super::TokenFeed`]) and updated before the change it saw triggers a reconcile, so a
//! count always includes the change that asked for it (the guarantee the former fresh LIST
//! per reconcile gave, without listing every token of the scope on every token change). A few dozen bytes per token, not whole objects.

use std::{collections::HashMap, sync::Mutex};

use kube::{ResourceExt, runtime::watcher};

use crate::api::{Phase, TokenCounts};
use crate::controller::access_token::Watched;

/// Which field of a token names the scope being counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeField {
    /// `spec.organization`.
    Organization,
    /// `spec.group`.
    Group,
}

/// What is kept of one token.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    organization: Option<String>,
    group: Option<String>,
    /// `None`: no status yet (counted as pending).
    phase: Option<Phase>,
}

impl Entry {
    fn of(watched: &Watched) -> Option<Self> {
        let token = watched.0.as_ref().ok()?;
        Some(Entry {
            organization: token.spec.organization.clone(),
            group: token.spec.group.clone(),
            phase: token.status.as_ref().and_then(|s| s.phase),
        })
    }
}

#[derive(Default)]
struct Entries {
    /// By `namespace/name`.
    by_token: HashMap<String, Entry>,
    /// During a (re)list: what it listed so far.
    relisting: Option<HashMap<String, Entry>>,
    /// A first list has completed: counts mean something.
    ready: bool,
}

/// The index; see the module documentation.
#[derive(Default)]
pub struct PhaseIndex(Mutex<Entries>);

fn key(watched: &Watched) -> String {
    format!(
        "{}/{}",
        watched.namespace().unwrap_or_default(),
        watched.name_any()
    )
}

impl PhaseIndex {
    /// Records a watch event; returns the tokens whose scope or phase changed (new ones and
    /// deleted ones included), the only changes a count can follow. Only those are copied.
    pub fn on(&self, event: &watcher::Event<Watched>) -> Vec<Watched> {
        use watcher::Event;
        let mut entries = self.0.lock().expect("lock");
        match event {
            Event::Apply(watched) | Event::InitApply(watched) => {
                let Some(entry) = Entry::of(watched) else {
                    return Vec::new();
                };
                let key = key(watched);
                if let Some(relisting) = &mut entries.relisting {
                    relisting.insert(key.clone(), entry.clone());
                }
                let previous = entries.by_token.insert(key, entry.clone());
                if previous.as_ref() == Some(&entry) {
                    Vec::new()
                } else {
                    vec![watched.clone()]
                }
            }
            Event::Delete(watched) => {
                entries.by_token.remove(&key(watched));
                vec![watched.clone()]
            }
            Event::Init => {
                entries.relisting = Some(HashMap::new());
                Vec::new()
            }
            Event::InitDone => {
                // Tokens deleted while the watch was down are simply gone from the new list;
                // the Organization and Group watches recount every scope after their own relist.
                if let Some(listed) = entries.relisting.take() {
                    entries.by_token = listed;
                }
                entries.ready = true;
                Vec::new()
            }
        }
    }

    /// Tokens naming `name` in `field`, by phase; `None` until the first list completed.
    pub fn counts(&self, field: ScopeField, name: &str) -> Option<TokenCounts> {
        let entries = self.0.lock().expect("lock");
        if !entries.ready {
            return None;
        }
        let mut counts = TokenCounts::default();
        for entry in entries.by_token.values() {
            let scope = match field {
                ScopeField::Organization => &entry.organization,
                ScopeField::Group => &entry.group,
            };
            if scope.as_deref() == Some(name) {
                count(&mut counts, entry.phase);
            }
        }
        Some(counts)
    }
}

/// Adds one token to `counts` (no status yet counts as pending).
pub fn count(counts: &mut TokenCounts, phase: Option<Phase>) {
    match phase.unwrap_or(Phase::Pending) {
        Phase::Pending => counts.pending += 1,
        Phase::Active => counts.active += 1,
        Phase::Revoked => counts.revoked += 1,
        Phase::Expired => counts.expired += 1,
        Phase::Suspended => counts.suspended += 1,
        Phase::Failed => counts.failed += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Trimmed;
    use crate::api::{AccessToken, AccessTokenSpec, AccessTokenStatus};

    fn token(name: &str, org: &str, phase: Option<Phase>) -> Watched {
        let mut token = AccessToken::new(
            name,
            AccessTokenSpec {
                organization: Some(org.into()),
                ..Default::default()
            },
        );
        token.metadata.namespace = Some("ns".into());
        token.status = phase.map(|p| AccessTokenStatus {
            phase: Some(p),
            ..Default::default()
        });
        Trimmed(Ok(token))
    }

    #[test]
    fn counts_follow_phases_and_only_phase_or_scope_changes_pass() {
        use watcher::Event;
        let index = PhaseIndex::default();
        assert_eq!(
            index.counts(ScopeField::Organization, "a"),
            None,
            "not listed yet"
        );
        index.on(&Event::Init);
        assert_eq!(index.on(&Event::InitApply(token("t1", "a", None))).len(), 1);
        index.on(&Event::InitApply(token("t2", "a", Some(Phase::Active))));
        index.on(&Event::InitApply(token("t3", "b", Some(Phase::Active))));
        index.on(&Event::InitDone);
        let counts = index.counts(ScopeField::Organization, "a").unwrap();
        assert_eq!((counts.pending, counts.active), (1, 1));

        // The same phase again (a lastUsedAt write, say) changes no count: nothing passes.
        assert!(
            index
                .on(&Event::Apply(token("t2", "a", Some(Phase::Active))))
                .is_empty()
        );
        assert_eq!(
            index
                .on(&Event::Apply(token("t1", "a", Some(Phase::Revoked))))
                .len(),
            1
        );
        assert_eq!(index.on(&Event::Delete(token("t2", "a", None))).len(), 1);
        let counts = index.counts(ScopeField::Organization, "a").unwrap();
        assert_eq!((counts.pending, counts.active, counts.revoked), (0, 0, 1));
        assert_eq!(index.counts(ScopeField::Group, "a").unwrap().revoked, 0);

        // A relist forgets tokens deleted while the watch was down.
        index.on(&Event::Init);
        index.on(&Event::InitApply(token("t3", "b", Some(Phase::Active))));
        index.on(&Event::InitDone);
        assert_eq!(
            index.counts(ScopeField::Organization, "a").unwrap(),
            TokenCounts::default()
        );
        assert_eq!(
            index.counts(ScopeField::Organization, "b").unwrap().active,
            1
        );
    }
}
