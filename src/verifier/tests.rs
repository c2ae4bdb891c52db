//! `Verifier::decide` end to end on in-memory stores (no API server): forged secrets for a
//! known id, the digest compare of proven secrets, colliding ids and PHC limits, counted from
//! the metrics.

use std::sync::Arc;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kube::runtime::{reflector, watcher};

use super::*;
use crate::{
    api::{OrganizationSpec, Role},
    test_support::{self, operator_technical_user},
    token::{HashParams, hash_token},
};

const FAST: HashParams = HashParams {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};

/// A token with a chosen id (as a forger, or a colliding issuer, would have).
fn token_with_id(id: &str) -> Token {
    let secret = Token::generate().expose_secret_part().to_string();
    Token::parse(&crate::token::with_checksum(&format!("atk_{id}_{secret}"))).unwrap()
}

struct World {
    verifier: Verifier,
    tokens: Arc<TokenTable>,
}

fn access_token(name: &str) -> AccessToken {
    test_support::access_token(name, test_support::organization_spec())
}

/// The TechnicalUser the operator would write for `token`, holding `credentials` (id, token).
fn technical_user(token: &AccessToken, credentials: &[(&str, &Token)]) -> TechnicalUser {
    let later = Timestamp::now() + SignedDuration::from_hours(1);
    let resolved = test_support::organization_scope(Role::OrganizationUser);
    let credentials = credentials
        .iter()
        .map(|(id, value)| Credential {
            id: id.to_string(),
            hash: hash_token(value, &FAST).unwrap(),
            not_after: Time(later),
            retired_at: None,
        })
        .collect();
    let mut user = operator_technical_user(token, &resolved, false, later, credentials);
    user.metadata.uid = Some(format!(
        "{}-user-uid",
        token.metadata.name.as_ref().unwrap()
    ));
    user
}

fn world(users: Vec<TechnicalUser>, tokens: Vec<AccessToken>, config: Config) -> World {
    let token_table = Arc::new(TokenTable::default());
    for token in tokens {
        token_table.apply(token);
    }
    let (organizations, mut org_writer) = reflector::store();
    let mut org = Organization::new(
        "acme",
        OrganizationSpec {
            display_name: None,
            token_namespaces: vec!["acme-ci".into()],
            ..Default::default()
        },
    );
    org.metadata.uid = Some("org-uid".into());
    org_writer.apply_watcher_event(&watcher::Event::Apply(org));
    let (groups, _) = reflector::store();
    let index = Arc::new(CredentialIndex::default());
    for user in users {
        index.apply(user);
    }
    let verifier = Verifier {
        index,
        watches: std::array::from_fn(|_| {
            let watch = WatchHealth::new("test");
            watch.synced.store(true, Ordering::Release);
            Arc::new(watch)
        }),
        tokens: token_table.clone(),
        organizations,
        groups,
        hasher: Hasher::new(FAST, 2).unwrap(),
        cache: HashResultCache::new(100).unwrap(),
        gates: Arc::new(gates::IdGates::new(100)),
        last_used: Arc::new(LastUsed::default()),
        config,
        metrics: Arc::new(VerifierMetrics::register(&mut Default::default())),
        process_metrics: Metrics::new(),
    };
    World {
        verifier,
        tokens: token_table,
    }
}

fn argon2_runs(verifier: &Verifier, result: Argon2Result) -> u64 {
    verifier
        .metrics
        .argon2_verifications
        .get_or_create(&Argon2Labels { result })
        .get()
}

fn username(verdict: &Verdict) -> Option<&str> {
    match verdict {
        Verdict::Authenticated(identity) => Some(&identity.username),
        _ => None,
    }
}

#[tokio::test]
async fn a_flood_of_forged_secrets_for_one_id_neither_authenticates_nor_turns_the_owner_away() {
    let (victim, other) = (Token::generate(), Token::generate());
    let (a, b) = (access_token("a"), access_token("b"));
    let users = vec![
        technical_user(&a, &[(victim.id().as_str(), &victim)]),
        technical_user(&b, &[(other.id().as_str(), &other)]),
    ];
    let w = world(users, vec![a, b], Config::default());
    let verifier = Arc::new(w.verifier);
    const FORGERIES: u64 = 200;
    let review = |token: Token| {
        let verifier = verifier.clone();
        tokio::spawn(async move { verifier.review(token.expose_secret()).await })
    };
    let forgeries: Vec<_> = (0..FORGERIES)
        .map(|_| review(token_with_id(victim.id().as_str())))
        .collect();
    // The owner's first use, never proven before, arrives in the middle of the flood.
    let owner = review(victim.clone());
    let later: Vec<_> = (0..FORGERIES)
        .map(|_| review(token_with_id(victim.id().as_str())))
        .collect();
    for forgery in forgeries.into_iter().chain(later) {
        assert_eq!(forgery.await.unwrap(), Verdict::Denied(Denial::WrongSecret));
    }
    assert_eq!(
        username(&owner.await.unwrap()),
        Some("accesstoken:acme-ci:a"),
        "the owner is accepted whatever came before"
    );
    assert!(
        argon2_runs(&verifier, Argon2Result::Mismatch) <= 2 * FORGERIES,
        "one argon2 at most per forged secret"
    );
    assert_eq!(verifier.metrics.argon2_timeouts.get(), 0);
    // Another id is unaffected.
    let verdict = verifier.review(other.expose_secret()).await;
    assert_eq!(username(&verdict), Some("accesstoken:acme-ci:b"));
}

#[tokio::test]
async fn a_check_whose_request_gave_up_is_skipped_not_hashed() {
    let value = Token::generate();
    let a = access_token("a");
    let users = vec![technical_user(&a, &[(value.id().as_str(), &value)])];
    let config = Config {
        hash_wait: Duration::ZERO,
        ..Config::default()
    };
    let w = world(users, vec![a], config);
    assert!(matches!(
        w.verifier.review(value.expose_secret()).await,
        Verdict::Unavailable(_)
    ));
    assert_eq!(argon2_runs(&w.verifier, Argon2Result::Match), 0);
    assert_eq!(argon2_runs(&w.verifier, Argon2Result::Mismatch), 0);
    assert_eq!(w.verifier.metrics.argon2_timeouts.get(), 1);
}

#[tokio::test]
async fn once_a_secret_is_proven_other_secrets_for_its_id_cost_no_argon2() {
    let value = Token::generate();
    let a = access_token("a");
    let users = vec![technical_user(&a, &[(value.id().as_str(), &value)])];
    let w = world(users, vec![a], Config::default());
    let verifier = w.verifier;
    let verdict = verifier.review(value.expose_secret()).await;
    assert_eq!(username(&verdict), Some("accesstoken:acme-ci:a"));
    assert_eq!(argon2_runs(&verifier, Argon2Result::Match), 1);
    for _ in 0..50 {
        let forged = token_with_id(value.id().as_str());
        assert_eq!(
            verifier.review(forged.expose_secret()).await,
            Verdict::Denied(Denial::WrongSecret),
            "a plain denial, from the digest compare"
        );
    }
    assert_eq!(argon2_runs(&verifier, Argon2Result::Mismatch), 0);
    assert_eq!(verifier.metrics.argon2_timeouts.get(), 0);
    let verdict = verifier.review(value.expose_secret()).await;
    assert_eq!(username(&verdict), Some("accesstoken:acme-ci:a"));
    assert_eq!(
        argon2_runs(&verifier, Argon2Result::Match),
        1,
        "answered from memory"
    );
}

#[tokio::test]
async fn colliding_ids_are_resolved_by_checking_each_candidate() {
    let id = "collision000";
    let (first, second) = (token_with_id(id), token_with_id(id));
    let (a, b) = (access_token("a"), access_token("b"));
    let users = vec![
        technical_user(&a, &[(id, &first)]),
        technical_user(&b, &[(id, &second)]),
    ];
    let w = world(users, vec![a.clone(), b], Config::default());
    let verdict = w.verifier.review(first.expose_secret()).await;
    assert_eq!(username(&verdict), Some("accesstoken:acme-ci:a"));
    let verdict = w.verifier.review(second.expose_secret()).await;
    assert_eq!(username(&verdict), Some("accesstoken:acme-ci:b"));
    assert_eq!(
        w.verifier.review(token_with_id(id).expose_secret()).await,
        Verdict::Denied(Denial::WrongSecret)
    );

    // One holder revoked: the other keeps working, the revoked one is denied as revoked.
    let mut revoked = a;
    revoked.spec.revoked = true;
    w.tokens.apply(revoked);
    let verdict = w.verifier.review(second.expose_secret()).await;
    assert_eq!(username(&verdict), Some("accesstoken:acme-ci:b"));
    assert_eq!(
        w.verifier.review(first.expose_secret()).await,
        Verdict::Denied(Denial::WrongSecret),
        "the revoked holder is no candidate; the other's hash does not match"
    );
}

#[tokio::test]
async fn an_untrusted_technical_user_listing_a_victims_id_changes_nothing() {
    let victim = Token::generate();
    let (a, b) = (access_token("a"), access_token("b"));
    let mut planted = technical_user(&b, &[(victim.id().as_str(), &victim)]);
    planted.metadata.labels = None; // not written by the operator
    let users = vec![
        technical_user(&a, &[(victim.id().as_str(), &victim)]),
        planted,
    ];
    let w = world(users, vec![a, b], Config::default());
    let verdict = w.verifier.review(victim.expose_secret()).await;
    assert_eq!(username(&verdict), Some("accesstoken:acme-ci:a"));
}

#[tokio::test]
async fn a_hash_over_the_limits_is_refused_without_argon2() {
    let value = Token::generate();
    let a = access_token("a");
    let mut user = technical_user(&a, &[(value.id().as_str(), &value)]);
    let hash = &mut user.spec.credentials[0].hash;
    *hash = hash.replace("m=1024,t=1", "m=1024,t=64");
    let w = world(vec![user], vec![a], Config::default());
    assert_eq!(
        w.verifier.review(value.expose_secret()).await,
        Verdict::Denied(Denial::HashRefused)
    );
    assert_eq!(argon2_runs(&w.verifier, Argon2Result::Mismatch), 0);
    assert_eq!(argon2_runs(&w.verifier, Argon2Result::Match), 0);
}

#[tokio::test]
async fn a_revoke_that_lands_while_the_hash_waits_wins() {
    let value = Token::generate();
    let a = access_token("a");
    let users = vec![technical_user(&a, &[(value.id().as_str(), &value)])];
    let World { verifier, tokens } = world(users, vec![a.clone()], Config::default());
    let verifier = Arc::new(verifier);
    // Hold the id's gate: the review passes its state check, then waits for its argon2 turn.
    let gate = verifier.gates.enter(value.id().as_str()).await;
    let review = {
        let (verifier, value) = (verifier.clone(), value.clone());
        tokio::spawn(async move { verifier.review(value.expose_secret()).await })
    };
    // On this single-threaded runtime each yield lets the review run up to its next wait.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!review.is_finished(), "the review waits at the id's gate");
    let mut revoked = a;
    revoked.spec.revoked = true;
    tokens.apply(revoked);
    drop(gate);
    assert_eq!(
        review.await.unwrap(),
        Verdict::Denied(Denial::Revoked),
        "the state is read again after the hash"
    );
    assert_eq!(
        argon2_runs(&verifier, Argon2Result::Match),
        1,
        "the secret was checked: the revoke landed during the wait, not before the state check"
    );
}

#[test]
fn the_verifier_keeps_of_a_token_status_only_rotated_at() {
    let rotated = Time(Timestamp::UNIX_EPOCH + SignedDuration::from_hours(1));
    let kept: crate::api::Trimmed<AccessToken> = serde_json::from_value(serde_json::json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
        "metadata": {"name": "ci", "namespace": "acme", "finalizers": ["x"]},
        "spec": {"organization": "acme", "revoked": true,
            "secretTemplate": {"labels": {"team": "a"}}},
        "status": {
            "phase": "Active", "tokenId": "abc", "rotatedAt": rotated,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Issued",
                "message": "a long message", "lastTransitionTime": rotated}],
        },
    }))
    .unwrap();
    let table = TokenTable::default();
    table.apply(kept.0.unwrap());
    let kept = table.get("acme", "ci").expect("kept");
    assert!(kept.spec.revoked, "the spec stays");
    assert!(kept.spec.secret_template.is_none() && kept.metadata.finalizers.is_none());
    let status = kept.status.expect("a status");
    assert_eq!(
        status.rotated_at,
        Some(rotated),
        "the lifetime still counts from it"
    );
    assert!(status.conditions.is_empty() && status.token_id.is_none() && status.phase.is_none());
}
