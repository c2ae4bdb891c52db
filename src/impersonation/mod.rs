//! The proxy's impersonation rights, kept equal to the live tokens.
//!
//! `access-token-operator proxy` forwards each request as the token's identity with
//! `Impersonate-User`, `-Uid`, `-Group` and `-Extra-*`. RBAC has no prefix match, and an
//! `impersonate` rule without `resourceNames` would let the proxy become anyone
//! (`system:masters` included). So the operator's leader writes ClusterRoles that name
//! exactly the users (`accesstoken:<namespace>:<name>`), TechnicalUser UIDs and scope groups
//! of the tokens that exist, sharded by a stable hash so that 100,000 tokens fit under the
//! object size limit. The chart binds every shard to the proxy's ServiceAccount; the
//! extras (our own `iam.accesstoken.io/*` keys) are granted by key in a static role.
//!
//! Kubernetes 1.36's constrained impersonation (beta, on by default) was weighed: it narrows
//! which verbs an impersonator may use, but still names users, UIDs and groups one by one
//! (no prefixes), so the sharded roles are needed either way, and managed clusters on older
//! releases do not have it. The roles use the classic `impersonate` verb, which every
//! supported release honours.
//!
//! Pure here (what the shards hold); [`sync`] watches TechnicalUsers and writes them.

pub mod sync;

use std::collections::BTreeSet;

use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::{
    api::{
        TechnicalUser,
        wellknown::{ACCESS_TOKEN_LABEL, MANAGED_BY_LABEL, OPERATOR_MANAGER as MANAGER},
    },
    domain::{scope_groups, username},
};

/// Name prefix of the shard ClusterRoles; an admission policy holds every ClusterRole with
/// this prefix to `impersonate` on `accesstoken:` names and UIDs.
pub const ROLE_PREFIX: &str = "access-token-operator-proxy-impersonate-";
/// Shards of the chart's default install.
pub const DEFAULT_SHARDS: u16 = 16;
/// The most shards a flag may ask for (the chart's bindings and the operator's
/// `resourceNames` list them all).
pub const MAX_SHARDS: u16 = 100;
/// Bytes of names one shard may hold: well under etcd's default request limit (1.5 MiB),
/// leaving room for metadata. 16 shards hold 100,000 tokens of 80-character names.
pub const SHARD_BUDGET_BYTES: usize = 1 << 20;

/// Flags of the impersonation sync (`run`).
#[derive(clap::Args, Debug, Clone)]
pub struct ImpersonationArgs {
    /// Keep this many ClusterRoles (access-token-operator-proxy-impersonate-00, -01, ...)
    /// equal to what the proxy may impersonate: the live tokens' users, UIDs and groups.
    /// 0: write none (no proxy). The installed bindings must name the same shards.
    #[arg(long, env = "IMPERSONATION_ROLE_SHARDS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=MAX_SHARDS as i64))]
    pub impersonation_role_shards: u16,
}

/// The name of shard `index`.
pub fn shard_name(index: u16) -> String {
    format!("{ROLE_PREFIX}{index:02}")
}

/// What the proxy may impersonate for one token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Impersonable {
    /// `accesstoken:<namespace>:<name>`.
    pub username: String,
    /// The TechnicalUser's UID (what the verifier reports as the token's uid).
    pub uid: String,
    /// The scope's groups, both roles' included: a token's role may change before its
    /// TechnicalUser shows it.
    pub groups: [String; 3],
}

/// The identity behind a TechnicalUser the operator wrote, unless it is going away.
pub fn of_user(user: &TechnicalUser) -> Option<Impersonable> {
    let labels = user.labels();
    let ours = labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER)
        && labels.get(ACCESS_TOKEN_LABEL) == Some(&user.name_any());
    if !ours || user.meta().deletion_timestamp.is_some() {
        return None;
    }
    Some(Impersonable {
        username: username(&user.namespace()?, &user.name_any()),
        uid: user.uid()?,
        groups: scope_groups(&user.spec.scope),
    })
}

/// The names one shard ClusterRole holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shard {
    /// Usernames (`users`, core group).
    pub users: BTreeSet<String>,
    /// TechnicalUser UIDs (`uids`, authentication.k8s.io).
    pub uids: BTreeSet<String>,
    /// Scope groups (`groups`, core group).
    pub groups: BTreeSet<String>,
    /// Bytes of names held, as counted against [`SHARD_BUDGET_BYTES`].
    bytes: usize,
}

impl Shard {
    fn fits(&self, names: &[&str], budget: usize) -> bool {
        self.bytes + names.iter().map(|n| cost(n)).sum::<usize>() <= budget
    }
}

/// A name's share of the serialized role: the name, its quotes and a comma.
fn cost(name: &str) -> usize {
    name.len() + 3
}

/// The shards' content for the live set, and how many tokens did not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One entry per shard, index = shard number.
    pub shards: Vec<Shard>,
    /// Tokens (or scope groups) left out because their shard was full: the proxy cannot
    /// act for them.
    pub left_out: usize,
}

/// Which shard a name goes to: a stable hash, so a token's entry stays where it is when
/// others come and go, and only its own shard is rewritten.
fn shard_of(name: &str, shards: u16) -> usize {
    (crc32fast::hash(name.as_bytes()) % u32::from(shards.max(1))) as usize
}

/// Spreads the live set over `shards` roles of at most `budget` bytes each. A token's user
/// and UID share a shard, so a full shard leaves a token out whole (fail closed). The input
/// is sorted first: the same set always gives the same plan.
pub fn plan(live: impl IntoIterator<Item = Impersonable>, shards: u16, budget: usize) -> Plan {
    let mut live: Vec<_> = live.into_iter().collect();
    live.sort();
    let mut plan = Plan {
        shards: vec![Shard::default(); usize::from(shards.max(1))],
        left_out: 0,
    };
    for token in live {
        let shard = &mut plan.shards[shard_of(&token.username, shards)];
        if !shard.fits(&[&token.username, &token.uid], budget) {
            plan.left_out += 1;
            continue;
        }
        shard.bytes += cost(&token.username) + cost(&token.uid);
        shard.users.insert(token.username);
        shard.uids.insert(token.uid);
        for group in token.groups {
            let shard = &mut plan.shards[shard_of(&group, shards)];
            if shard.groups.contains(&group) {
                continue;
            }
            if shard.fits(&[&group], budget) {
                shard.bytes += cost(&group);
                shard.groups.insert(group);
            } else {
                plan.left_out += 1;
            }
        }
    }
    plan
}

/// The server-side apply body of shard `index`: one `impersonate` rule per kind of name
/// that it holds, and nothing else (the admission policy refuses anything else).
pub fn cluster_role(index: u16, shard: &Shard) -> serde_json::Value {
    let mut rules = Vec::new();
    let mut rule = |group: &str, resource: &str, names: &BTreeSet<String>| {
        if !names.is_empty() {
            rules.push(json!({
                "apiGroups": [group],
                "resources": [resource],
                "verbs": ["impersonate"],
                "resourceNames": names,
            }));
        }
    };
    rule("", "users", &shard.users);
    rule("authentication.k8s.io", "uids", &shard.uids);
    rule("", "groups", &shard.groups);
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": shard_name(index),
            "labels": {MANAGED_BY_LABEL: MANAGER},
        },
        "rules": rules,
    })
}

#[cfg(test)]
mod tests;
