//! The token value appears in its Secret and nowhere else: not in status, Events,
//! TechnicalUsers, scope objects or the operator's logs.

use k8s_openapi::api::core::v1::Event;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

use access_token_operator::api::Phase;

use crate::support::{Operator, Tenant, eventually};

#[tokio::test]
async fn the_token_value_is_only_ever_in_its_secret() {
    let tenant = Tenant::new("leaks").await;
    let operator = Operator::start(&tenant.namespace).await;
    tenant
        .create_token("t", json!({"organization": tenant.organization}))
        .await;
    tenant
        .create_token("g", json!({"group": tenant.group, "admin": true}))
        .await;
    tenant.wait_for_phase("t", Phase::Active).await;
    tenant.wait_for_phase("g", Phase::Active).await;
    let mut values = vec![
        tenant.token_in_secret("t").await,
        tenant.token_in_secret("g").await,
    ];

    // Walk through revoke, re-enable and a reissue so that every kind of Event and log line exists.
    tenant.patch_spec("t", json!({"revoked": true})).await;
    tenant.wait_for_phase("t", Phase::Revoked).await;
    tenant.patch_spec("t", json!({"revoked": false})).await;
    tenant.wait_for_phase("t", Phase::Active).await;
    let patch = json!({"stringData": {"token": "garbage"}});
    tenant
        .secrets()
        .patch("t", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let reissued = eventually("a reissued token", || async {
        let token = access_token_operator::token::Token::parse(&crate::support::secret_text(
            &tenant.secrets().get("t").await.ok()?,
            "token",
        ))
        .ok()?;
        (token.id() != values[0].id()).then_some(token)
    })
    .await;
    values.push(reissued);
    tenant.wait_for_event("t", "TokenReissued").await;

    let everything_but_secrets = [
        serde_json::to_string(&tenant.tokens().list(&ListParams::default()).await.unwrap())
            .unwrap(),
        serde_json::to_string(&tenant.users().list(&ListParams::default()).await.unwrap()).unwrap(),
        serde_json::to_string(
            &Api::<Event>::namespaced(tenant.client.clone(), &tenant.namespace)
                .list(&ListParams::default())
                .await
                .unwrap(),
        )
        .unwrap(),
        serde_json::to_string(
            &tenant
                .organizations()
                .list(&ListParams::default())
                .await
                .unwrap(),
        )
        .unwrap(),
        operator.logs(),
    ];
    let secrets =
        serde_json::to_string(&tenant.secrets().list(&ListParams::default()).await.unwrap())
            .unwrap();
    for value in &values {
        let full = value.expose_secret();
        // The part after the public id is what must never leak, with or without the prefix.
        let secret_part = &full[full.len() - 38..];
        for (i, haystack) in everything_but_secrets.iter().enumerate() {
            assert!(
                !haystack.contains(secret_part),
                "token {} leaked into source #{i}",
                value.id()
            );
        }
    }
    // Sanity (so the searches above could have found something): the live tokens are in their Secrets.
    for live in &values[1..] {
        assert!(
            secrets.contains(&base64_of(live.expose_secret())),
            "token {} is in its Secret",
            live.id()
        );
    }
    assert!(
        operator.logs().contains(values[0].id().as_str()),
        "sanity: logs do name the public token id"
    );
}

fn base64_of(text: &str) -> String {
    // Secrets come back base64-encoded; encode the same way to search for the value there.
    let value = k8s_openapi::ByteString(text.as_bytes().to_vec());
    serde_json::to_value(value)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}
