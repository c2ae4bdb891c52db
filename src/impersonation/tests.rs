use super::*;
use crate::api::{Role, Scope, ScopeKind, TechnicalUserSpec};

fn token(namespace: &str, name: &str, uid: &str, org: &str) -> Impersonable {
    Impersonable {
        username: username(namespace, name),
        uid: uid.to_string(),
        groups: scope_groups(&Scope {
            kind: ScopeKind::Organization,
            name: org.to_string(),
            organization: org.to_string(),
            uid: None,
        }),
    }
}

fn user(name: &str, labels: &[(&str, &str)]) -> TechnicalUser {
    let mut user = TechnicalUser::new(
        name,
        TechnicalUserSpec {
            scope: Scope {
                kind: ScopeKind::Group,
                name: "web".into(),
                organization: "acme".into(),
                uid: None,
            },
            role: Role::GroupUser,
            disabled: false,
            expires_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            credentials: vec![],
        },
    );
    user.metadata.namespace = Some("acme-ci".into());
    user.metadata.uid = Some("0b5c7e52-8c8e-4d5c-9a43-3c1ef0a1d2a4".into());
    user.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    user
}

#[test]
fn a_technical_user_of_ours_gives_its_username_uid_and_every_group_of_its_scope() {
    let user = user(
        "deployer",
        &[
            (MANAGED_BY_LABEL, MANAGER),
            (ACCESS_TOKEN_LABEL, "deployer"),
        ],
    );
    let identity = of_user(&user).expect("ours");
    assert_eq!(identity.username, "accesstoken:acme-ci:deployer");
    assert_eq!(identity.uid, "0b5c7e52-8c8e-4d5c-9a43-3c1ef0a1d2a4");
    assert_eq!(
        identity.groups,
        [
            "accesstoken:group:web",
            "accesstoken:group:web:admin",
            "accesstoken:group:web:user"
        ]
    );
}

#[test]
fn unlabelled_misnamed_or_deleting_technical_users_give_nothing() {
    assert_eq!(of_user(&user("deployer", &[])), None);
    let misnamed = user(
        "deployer",
        &[(MANAGED_BY_LABEL, MANAGER), (ACCESS_TOKEN_LABEL, "other")],
    );
    assert_eq!(of_user(&misnamed), None);
    let mut deleting = user(
        "deployer",
        &[
            (MANAGED_BY_LABEL, MANAGER),
            (ACCESS_TOKEN_LABEL, "deployer"),
        ],
    );
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    assert_eq!(of_user(&deleting), None);
}

#[test]
fn every_name_lands_in_exactly_one_shard_and_a_token_keeps_user_and_uid_together() {
    let live: Vec<_> = (0..500)
        .map(|i| {
            token(
                "ns",
                &format!("t{i}"),
                &format!("uid-{i}"),
                &format!("org{}", i % 7),
            )
        })
        .collect();
    let planned = plan(live.clone(), 16, SHARD_BUDGET_BYTES);
    assert_eq!(planned.left_out, 0);
    assert_eq!(planned.shards.len(), 16);
    for t in &live {
        let holding: Vec<_> = planned
            .shards
            .iter()
            .filter(|s| s.users.contains(&t.username))
            .collect();
        assert_eq!(holding.len(), 1, "{} in one shard", t.username);
        assert!(holding[0].uids.contains(&t.uid));
    }
    let groups: BTreeSet<_> = planned
        .shards
        .iter()
        .flat_map(|s| s.groups.clone())
        .collect();
    assert_eq!(groups.len(), 7 * 3);
    assert!(
        planned
            .shards
            .iter()
            .filter(|s| !s.users.is_empty())
            .count()
            > 8,
        "the hash spreads tokens"
    );
}

#[test]
fn adding_a_token_changes_only_the_shards_its_names_hash_to() {
    let live: Vec<_> = (0..200)
        .map(|i| token("ns", &format!("t{i}"), &format!("uid-{i}"), "acme"))
        .collect();
    let before = plan(live.clone(), 16, SHARD_BUDGET_BYTES);
    let mut more = live;
    more.push(token("ns", "new", "uid-new", "acme"));
    let after = plan(more, 16, SHARD_BUDGET_BYTES);
    let changed = (0..16)
        .filter(|&i| before.shards[i] != after.shards[i])
        .count();
    assert_eq!(changed, 1);
}

#[test]
fn a_full_shard_leaves_whole_tokens_out_and_stays_under_its_budget() {
    let live: Vec<_> = (0..100)
        .map(|i| token("ns", &format!("t{i}"), &format!("uid-{i}"), "acme"))
        .collect();
    let budget = 400;
    let planned = plan(live, 1, budget);
    let shard = &planned.shards[0];
    assert!(planned.left_out > 0);
    assert_eq!(shard.users.len(), shard.uids.len());
    let bytes: usize = shard
        .users
        .iter()
        .chain(&shard.uids)
        .chain(&shard.groups)
        .map(|n| cost(n))
        .sum();
    assert!(bytes <= budget);
}

#[test]
fn the_default_shards_hold_100000_tokens_under_the_object_size_limit() {
    // Namespaces of 20 and names of 40 characters: longer than most.
    let live = (0..100_000).map(|i| Impersonable {
        username: username("tenant-namespace-abc", &format!("token-{i:034}")),
        uid: format!("{i:08}-8c8e-4d5c-9a43-3c1ef0a1d2a4"),
        groups: scope_groups(&Scope {
            kind: ScopeKind::Group,
            name: format!("group-{}", i % 1000),
            organization: "acme".into(),
            uid: None,
        }),
    });
    let planned = plan(live, DEFAULT_SHARDS, SHARD_BUDGET_BYTES);
    assert_eq!(planned.left_out, 0);
    for (index, shard) in planned.shards.iter().enumerate() {
        let role = cluster_role(index as u16, shard).to_string();
        assert!(
            role.len() < 1_572_864,
            "shard {index}: {} bytes",
            role.len()
        );
    }
}

#[test]
fn a_shard_role_grants_impersonate_on_its_names_only() {
    let planned = plan(
        [token("acme-ci", "deployer", "u-1", "acme")],
        1,
        SHARD_BUDGET_BYTES,
    );
    let role = cluster_role(0, &planned.shards[0]);
    assert_eq!(
        role["metadata"]["name"],
        "access-token-operator-proxy-impersonate-00"
    );
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 3);
    for rule in rules {
        assert_eq!(rule["verbs"], json!(["impersonate"]));
        assert!(!rule["resourceNames"].as_array().unwrap().is_empty());
    }
    assert_eq!(rules[0]["resources"], json!(["users"]));
    assert_eq!(
        rules[0]["resourceNames"],
        json!(["accesstoken:acme-ci:deployer"])
    );
    assert_eq!(rules[1]["apiGroups"], json!(["authentication.k8s.io"]));
    assert_eq!(rules[1]["resourceNames"], json!(["u-1"]));
    // An empty shard grants nothing at all (no rule without resourceNames).
    assert_eq!(cluster_role(1, &Shard::default())["rules"], json!([]));
}
