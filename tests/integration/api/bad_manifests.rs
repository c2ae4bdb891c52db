//! Bad input is refused by the API server at `kubectl apply`, with a message a person
//! understands, and nothing is stored.

use crate::support::{Tenant, install_crds, kubectl, text};

/// Runs `kubectl apply -f -` on a manifest; returns (success, stdout + stderr).
async fn kubectl_apply(manifest: &str) -> (bool, String) {
    let output = kubectl(&["apply", "-f", "-"]).stdin(manifest).run().await;
    let text = format!("{}{}", text(&output.stdout), text(&output.stderr));
    (output.status.success(), text)
}

fn token_manifest(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: iam.accesstoken.io/v1alpha1\nkind: AccessToken\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}"
    )
}

#[tokio::test]
async fn malformed_access_tokens_are_refused_with_a_clear_message() {
    install_crds().await;
    let tenant = Tenant::new("badinput").await;
    let ns = &tenant.namespace;
    let org = &tenant.organization;
    let group = &tenant.group;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "both scopes",
            format!("  organization: {org}\n  group: {group}\n"),
            "exactly one of spec.organization or spec.group must be set",
        ),
        (
            "no scope",
            "  displayName: nothing\n".into(),
            "exactly one of spec.organization or spec.group must be set",
        ),
        (
            "expiresAt with lifetime",
            format!(
                "  organization: {org}\n  expiresAt: \"2027-01-01T00:00:00Z\"\n  lifetime: 90d\n"
            ),
            "spec.expiresAt and spec.lifetime are mutually exclusive",
        ),
        (
            "bad lifetime unit",
            format!("  organization: {org}\n  lifetime: 90y\n"),
            "spec.lifetime must be a whole number followed by m, h, d or w",
        ),
        (
            "zero lifetime",
            format!("  organization: {org}\n  lifetime: 0d\n"),
            "spec.lifetime must be a whole number followed by m, h, d or w",
        ),
        (
            "lifetime without unit",
            format!("  organization: {org}\n  lifetime: \"90\"\n"),
            "spec.lifetime must be a whole number followed by m, h, d or w",
        ),
        (
            "expiresAt not a date",
            format!("  organization: {org}\n  expiresAt: next tuesday\n"),
            "spec.expiresAt",
        ),
        (
            "bad secret name",
            format!("  organization: {org}\n  secretName: Not_A_Name\n"),
            "spec.secretName must be a valid Secret name",
        ),
        (
            "admin not a boolean",
            format!("  organization: {org}\n  admin: sometimes\n"),
            "spec.admin",
        ),
        (
            "unknown field",
            format!("  organization: {org}\n  rol: admin\n"),
            "unknown field \"spec.rol\"",
        ),
        (
            "empty organization",
            "  organization: \"\"\n".into(),
            "spec.organization",
        ),
        // secretTemplate: what the Secret would refuse is refused here, before any token is
        // minted (a Secret write that fails after staging is what issue 7 finding 3 was about).
        (
            "label key with a space",
            template(org, r#"labels: {"Bad Key": "x"}"#),
            "every label key must be a valid Kubernetes label key",
        ),
        (
            "label key with an uppercase prefix",
            template(org, r#"labels: {"Example.com/team": "x"}"#),
            "every label key must be a valid Kubernetes label key",
        ),
        (
            "label key prefix over 253 characters",
            template(
                org,
                &format!(r#"labels: {{"{}.example.com/team": "x"}}"#, "a".repeat(250)),
            ),
            "every label key must be a valid Kubernetes label key",
        ),
        (
            "label key name over 63 characters",
            template(org, &format!(r#"labels: {{"{}": "x"}}"#, "a".repeat(64))),
            "every label key must be a valid Kubernetes label key",
        ),
        (
            "label value with a space",
            template(org, r#"labels: {"team": "not valid"}"#),
            "a label value must be empty or at most 63 letters, digits",
        ),
        (
            "label value starting with a dash",
            template(org, r#"labels: {"team": "-platform"}"#),
            "a label value must be empty or at most 63 letters, digits",
        ),
        (
            "label value over 63 characters",
            template(org, &format!(r#"labels: {{"team": "{}"}}"#, "a".repeat(64))),
            "spec.secretTemplate.labels.team",
        ),
        (
            "too many labels",
            template(
                org,
                &format!(
                    "labels: {{{}}}",
                    (0..33)
                        .map(|i| format!(r#""l{i}": "v""#))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            "spec.secretTemplate.labels",
        ),
        (
            "annotation key with a space",
            template(org, r#"annotations: {"bad key": "v"}"#),
            "every annotation key must be a valid Kubernetes annotation key",
        ),
        (
            "annotation value over 4096 characters",
            template(
                org,
                &format!(r#"annotations: {{"note": "{}"}}"#, "a".repeat(4097)),
            ),
            "spec.secretTemplate.annotations.note",
        ),
    ];
    for (case, spec, expected) in cases {
        let name = format!(
            "bad-{}",
            case.replace([' ', '.'], "-")
                .to_lowercase()
                .replace("--", "-")
        );
        let (ok, output) = kubectl_apply(&token_manifest(ns, &name, &spec)).await;
        assert!(!ok, "{case}: kubectl apply should fail, got: {output}");
        assert!(
            output.contains(expected),
            "{case}: expected {expected:?} in: {output}"
        );
        assert!(
            tenant.tokens().get_opt(&name).await.unwrap().is_none(),
            "{case}: nothing stored"
        );
    }

    // What the rules allow still applies: prefixed keys, empty label values, free-text
    // annotation values.
    let (ok, output) = kubectl_apply(&token_manifest(
        ns,
        "good-template",
        &template(
            org,
            r#"{"labels": {"example.com/team": "platform-1", "tier": ""}, "annotations": {"example.com/note": "free text, with spaces!"}}"#,
        ),
    ))
    .await;
    assert!(ok, "a valid secretTemplate applies: {output}");
}

/// An AccessToken spec for `org` with `secretTemplate: <template>` (YAML flow style).
fn template(org: &str, template: &str) -> String {
    let template = if template.starts_with('{') {
        template.to_string()
    } else {
        format!("{{{template}}}")
    };
    format!("  organization: {org}\n  secretTemplate: {template}\n")
}

/// A TechnicalUser holds at most 4 credentials, with bounded ids and hashes: whatever
/// writes it, the object cannot grow toward etcd's limit.
#[tokio::test]
async fn technical_user_credentials_are_bounded() {
    install_crds().await;
    let tenant = Tenant::new("tubounds").await;
    let ns = &tenant.namespace;
    let user = |credentials: &str| {
        format!(
            "apiVersion: iam.accesstoken.io/v1alpha1\nkind: TechnicalUser\nmetadata:\n  name: u\n  namespace: {ns}\nspec:\n  scope: {{kind: Organization, name: o, organization: o}}\n  role: OrganizationUser\n  disabled: false\n  expiresAt: \"2099-01-01T00:00:00Z\"\n  credentials: [{credentials}]\n"
        )
    };
    let credential = |id: &str, hash: &str| {
        format!(r#"{{"id": "{id}", "hash": "{hash}", "notAfter": "2099-01-01T00:00:00Z"}}"#)
    };
    let five = (0..5)
        .map(|i| credential(&format!("id{i}"), "h"))
        .collect::<Vec<_>>()
        .join(", ");
    let long_hash = credential("id", &"h".repeat(513));
    let long_id = credential(&"i".repeat(65), "h");
    for (case, credentials, expected) in [
        ("five credentials", five, "spec.credentials"),
        (
            "hash over 512 characters",
            long_hash,
            "spec.credentials[0].hash",
        ),
        ("id over 64 characters", long_id, "spec.credentials[0].id"),
    ] {
        let (ok, output) = kubectl_apply(&user(&credentials)).await;
        assert!(!ok, "{case}: kubectl apply should fail, got: {output}");
        assert!(
            output.contains(expected),
            "{case}: expected {expected:?} in: {output}"
        );
    }
}

#[tokio::test]
async fn scope_and_secret_name_edits_are_refused() {
    install_crds().await;
    let tenant = Tenant::new("immutable").await;
    let ns = &tenant.namespace;
    let org = &tenant.organization;
    let group = &tenant.group;
    let (ok, output) = kubectl_apply(&token_manifest(
        ns,
        "t",
        &format!("  organization: {org}\n"),
    ))
    .await;
    assert!(ok, "a valid token applies: {output}");
    let (ok, output) = kubectl_apply(&token_manifest(
        ns,
        "named",
        &format!("  organization: {org}\n  secretName: named-secret\n"),
    ))
    .await;
    assert!(ok, "a valid token applies: {output}");
    let (ok, output) =
        kubectl_apply(&token_manifest(ns, "g", &format!("  group: {group}\n"))).await;
    assert!(ok, "a valid group token applies: {output}");

    let edits: Vec<(&str, &str, String, &str)> = vec![
        (
            // The group rule's own message: the organization rule says "spec.organization".
            "another group",
            "g",
            "  group: someone-elses-group\n".into(),
            "spec.group is immutable",
        ),
        (
            "another organization",
            "t",
            "  organization: someone-else\n".into(),
            "spec.organization is immutable",
        ),
        (
            "organization to group",
            "t",
            format!("  group: {group}\n"),
            "is immutable",
        ),
        (
            "setting a different secretName",
            "t",
            format!("  organization: {org}\n  secretName: other\n"),
            "spec.secretName is immutable once set",
        ),
        (
            "changing secretName",
            "named",
            format!("  organization: {org}\n  secretName: renamed\n"),
            "spec.secretName is immutable once set",
        ),
        (
            "removing secretName",
            "named",
            format!("  organization: {org}\n"),
            "spec.secretName is immutable once set",
        ),
    ];
    for (case, name, spec, expected) in edits {
        let (ok, output) = kubectl_apply(&token_manifest(ns, name, &spec)).await;
        assert!(!ok, "{case}: the edit should be refused, got: {output}");
        assert!(
            output.contains(expected),
            "{case}: expected {expected:?} in: {output}"
        );
    }
    let stored = tenant.tokens().get("t").await.unwrap();
    assert_eq!(
        stored.spec.organization.as_deref(),
        Some(org.as_str()),
        "the stored spec is unchanged"
    );
    assert_eq!(
        tenant
            .tokens()
            .get("g")
            .await
            .unwrap()
            .spec
            .group
            .as_deref(),
        Some(group.as_str()),
        "the stored group is unchanged"
    );

    // Allowed edits still go through: revoke, admin, expiry.
    let (ok, output) = kubectl_apply(&token_manifest(
        ns,
        "t",
        &format!("  organization: {org}\n  revoked: true\n  admin: true\n  lifetime: 2w\n"),
    ))
    .await;
    assert!(ok, "revoke, admin and lifetime are editable: {output}");
    // Naming the Secret as it already is (the default, metadata.name) is no change.
    let (ok, output) = kubectl_apply(&token_manifest(
        ns,
        "t",
        &format!(
            "  organization: {org}\n  revoked: true\n  admin: true\n  lifetime: 2w\n  secretName: t\n"
        ),
    ))
    .await;
    assert!(ok, "secretName set to the default it had: {output}");

    // A Group's organization is immutable too.
    let (ok, output) = kubectl_apply(&format!(
        "apiVersion: iam.accesstoken.io/v1alpha1\nkind: Group\nmetadata:\n  name: {group}\nspec:\n  organization: elsewhere\n  tokenNamespaces: [{ns}]\n"
    ))
    .await;
    assert!(
        !ok && output.contains("organization is immutable"),
        "group move refused: {output}"
    );
}

#[tokio::test]
async fn kubectl_explains_fields_and_shows_useful_columns() {
    install_crds().await;
    // The API server publishes a new CRD's OpenAPI schema shortly after it is established.
    let explained = crate::support::eventually("kubectl explain to know AccessToken", || async {
        let output = kubectl(&["explain", "accesstoken.spec"]).run().await;
        output
            .status
            .success()
            .then(|| String::from_utf8(output.stdout).unwrap())
    })
    .await;
    // kubectl wraps lines; compare text with whitespace collapsed.
    let explained = explained.split_whitespace().collect::<Vec<_>>().join(" ");
    for text in [
        "Exactly one of organization or group; immutable",
        "Mutually exclusive",
        "re-enables the same token",
        "Defaults to metadata.name",
    ] {
        assert!(
            explained.contains(text),
            "kubectl explain lacks {text:?}:\n{explained}"
        );
    }
    let status = kubectl(&["explain", "accesstoken.status.tokenId"])
        .succeed()
        .await;
    let status = status.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(status.contains("public part of the token"), "{status}");

    let tenant = Tenant::new("columns").await;
    let _operator = crate::support::Operator::start(&tenant.namespace).await;
    tenant
        .create_token("cols", serde_json::json!({"organization": tenant.organization, "admin": true, "expiresAt": "2099-01-01T00:00:00Z"}))
        .await;
    let token = tenant
        .wait_for_phase("cols", access_token_operator::api::Phase::Active)
        .await;
    let wide = kubectl(&["get", "atk", "-n", &tenant.namespace, "-o", "wide"])
        .succeed()
        .await;
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "SCOPE", "ROLE", "STATUS", "EXPIRES", "AGE", "TOKEN", "ID", "REASON", "NEXT",
            "RENEWAL"
        ]
    );
    let row = wide.lines().nth(1).unwrap();
    let token_id = token.status.unwrap().token_id.unwrap();
    for cell in [
        format!("organization/{}", tenant.organization),
        "OrganizationAdmin".into(),
        "Active".into(),
        "2099-01-01T00:00:00Z".into(),
        token_id,
        "TokenActive".into(),
    ] {
        assert!(
            row.contains(&cell),
            "kubectl get -o wide lacks {cell:?}: {row}"
        );
    }
    // The scope is a selectable field: `kubectl get atk --field-selector spec.organization=<org>`.
    let selected = kubectl(&[
        "get",
        "atk",
        "-A",
        "--field-selector",
        &format!("spec.organization={}", tenant.organization),
        "-o",
        "name",
    ])
    .succeed()
    .await;
    assert_eq!(selected.trim(), "accesstoken.iam.accesstoken.io/cols");
    let none = kubectl(&[
        "get",
        "atk",
        "-A",
        "--field-selector",
        "spec.organization=nobody",
        "-o",
        "name",
    ])
    .succeed()
    .await;
    assert!(none.trim().is_empty(), "{none}");

    // The short names: atk, tu, org, grp.
    let short = kubectl(&[
        "get",
        "atk,tu,org,grp",
        "-n",
        &tenant.namespace,
        "-o",
        "name",
    ])
    .succeed()
    .await;
    for name in [
        "accesstoken.iam.accesstoken.io/cols".to_string(),
        "technicaluser.iam.accesstoken.io/cols".to_string(),
        format!("organization.iam.accesstoken.io/{}", tenant.organization),
        format!("group.iam.accesstoken.io/{}", tenant.group),
    ] {
        assert!(short.lines().any(|line| line == name), "{name} in {short}");
    }
}
