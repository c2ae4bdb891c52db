//! Tenants and tokens for tests: an Organization and a Group admitting a fresh namespace,
//! AccessTokens from JSON, and readers for their children.

use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use access_token_operator::{
    api::{
        AccessToken, Group, GroupSpec, Organization, OrganizationSpec, Phase, ScopeKind,
        TechnicalUser,
    },
    token::Token,
};

use super::{
    cluster::{admin_client, install_crds, test_namespace, unique_name},
    wait::{Watchdog, eventually},
};

/// An AccessToken with this spec (JSON, as a user would write it).
pub fn access_token(namespace: &str, name: &str, spec: Value) -> AccessToken {
    serde_json::from_value(json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1",
        "kind": "AccessToken",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("a valid AccessToken")
}

/// Group `name` of `organization`, admitting `namespace`.
fn group_admitting(name: &str, organization: &str, namespace: &str) -> Group {
    Group::new(
        name,
        GroupSpec {
            organization: organization.to_string(),
            display_name: None,
            token_namespaces: vec![namespace.to_string()],
            ..Default::default()
        },
    )
}

/// Returns once a token created now is newer than `group` (as the API server returned it):
/// the operator issues a group token only if it is (creation timestamps count whole seconds,
/// so at most a second).
pub async fn newer_than_group(group: &Group) {
    let created = group
        .metadata
        .creation_timestamp
        .as_ref()
        .expect("the API server sets creationTimestamp")
        .0
        .as_second();
    eventually(
        &format!("the second after Group {} was created", group.name_any()),
        || async { (k8s_openapi::jiff::Timestamp::now().as_second() > created).then_some(()) },
    )
    .await;
}

/// A namespace with an Organization and a Group that both admit it.
pub struct Tenant {
    pub client: Client,
    pub namespace: String,
    pub organization: String,
    pub group: String,
    /// More Organizations and Groups the test created through the Tenant, deleted with it.
    more_scopes: std::sync::Mutex<Vec<(ScopeKind, String)>>,
    /// The test's timeout, disarmed when the Tenant is dropped.
    _watchdog: Watchdog,
}

impl Tenant {
    /// Creates the namespace, Organization and Group, with unique names from `prefix`.
    pub async fn new(prefix: &str) -> Self {
        let watchdog = Watchdog::arm();
        install_crds().await;
        Self::in_installed_cluster(prefix, watchdog).await
    }

    /// As `new`, in a cluster where the CRDs and `deploy/` are installed already (by Helm or
    /// kustomize, in the end-to-end tests): installs nothing.
    pub async fn in_installed_cluster(prefix: &str, watchdog: Watchdog) -> Self {
        let client = admin_client().await;
        let namespace = test_namespace(&client, prefix).await;
        let organization = unique_name(&format!("{prefix}-org"));
        let group = unique_name(&format!("{prefix}-grp"));
        let orgs: Api<Organization> = Api::all(client.clone());
        orgs.create(
            &PostParams::default(),
            &Organization::new(
                &organization,
                OrganizationSpec {
                    display_name: None,
                    token_namespaces: vec![namespace.clone()],
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("Organization is created");
        let created = Api::<Group>::all(client.clone())
            .create(
                &PostParams::default(),
                &group_admitting(&group, &organization, &namespace),
            )
            .await
            .expect("Group is created");
        newer_than_group(&created).await;
        Self {
            client,
            namespace,
            organization,
            group,
            more_scopes: std::sync::Mutex::default(),
            _watchdog: watchdog,
        }
    }

    pub fn tokens(&self) -> Api<AccessToken> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn users(&self) -> Api<TechnicalUser> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Every TechnicalUser in the tenant's namespace.
    pub async fn list_users(&self) -> Vec<TechnicalUser> {
        self.users()
            .list(&ListParams::default())
            .await
            .expect("TechnicalUsers list")
            .items
    }

    /// Deletes the AccessToken `name` (a user's delete: it does not wait for it to go).
    pub async fn delete_token(&self, name: &str) {
        self.tokens()
            .delete(name, &DeleteParams::default())
            .await
            .expect("the AccessToken is deleted");
    }

    /// Puts the finalizer earlier builds gave every AccessToken (`iam.accesstoken.io/cleanup`)
    /// on token `name`, as such a build left it; new tokens get none.
    pub async fn add_old_finalizer(&self, name: &str) {
        let finalizer = json!({"metadata": {"finalizers": ["iam.accesstoken.io/cleanup"]}});
        self.tokens()
            .patch(name, &PatchParams::default(), &Patch::Merge(&finalizer))
            .await
            .expect("the finalizer is added");
    }

    /// Creates a Secret `name` in the tenant's namespace that the operator does not own (a
    /// name someone else already holds).
    pub async fn create_foreign_secret(&self, name: &str) {
        let foreign: Secret = serde_json::from_value(json!({
            "metadata": {"name": name}, "stringData": {"note": "not the operator's"}
        }))
        .expect("a Secret");
        self.secrets()
            .create(&PostParams::default(), &foreign)
            .await
            .expect("Secret is created");
    }

    pub fn organizations(&self) -> Api<Organization> {
        Api::all(self.client.clone())
    }

    /// Creates an Organization admitting `token_namespaces`, as a platform admin would.
    pub async fn create_organization(&self, name: &str, token_namespaces: &[&str]) {
        let organization: Organization = serde_json::from_value(json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "Organization",
            "metadata": {"name": name}, "spec": {"tokenNamespaces": token_namespaces}
        }))
        .expect("a valid Organization");
        self.organizations()
            .create(&PostParams::default(), &organization)
            .await
            .expect("Organization is created");
        self.remember(ScopeKind::Organization, name);
    }

    fn remember(&self, kind: ScopeKind, name: &str) {
        let mut more = self.more_scopes.lock().expect("lock");
        if !more.iter().any(|(k, n)| *k == kind && n == name) {
            more.push((kind, name.to_string()));
        }
    }

    /// Creates Group `name` of the tenant's organization, admitting the tenant's namespace.
    pub async fn create_group(&self, name: &str) -> Group {
        self.create_group_of(name, &self.organization).await
    }

    /// Creates Group `name` of `organization`, admitting the tenant's namespace; returns it as
    /// the API server stored it.
    pub async fn create_group_of(&self, name: &str, organization: &str) -> Group {
        let group = group_admitting(name, organization, &self.namespace);
        let created = Api::<Group>::all(self.client.clone())
            .create(&PostParams::default(), &group)
            .await
            .expect("Group is created");
        self.remember(ScopeKind::Group, name);
        created
    }

    /// Waits until the TechnicalUser `name` is disabled (the token stops working).
    pub async fn wait_for_user_disabled(&self, name: &str) {
        eventually(&format!("TechnicalUser {name} to be disabled"), || async {
            self.users()
                .get(name)
                .await
                .ok()?
                .spec
                .disabled
                .then_some(())
        })
        .await;
    }

    /// Creates an AccessToken with this spec (JSON, as a user would write it).
    pub async fn create_token(&self, name: &str, spec: Value) -> AccessToken {
        let token = access_token(&self.namespace, name, spec);
        self.tokens()
            .create(&PostParams::default(), &token)
            .await
            .expect("AccessToken is created")
    }

    /// Creates an AccessToken, waits until it is Active and returns the token from its Secret.
    pub async fn issue(&self, name: &str, spec: Value) -> Token {
        self.create_token(name, spec).await;
        let token = self.wait_for_phase(name, Phase::Active).await;
        let secret = token
            .status
            .and_then(|s| s.secret_name)
            .expect("an Active token names its Secret");
        self.token_in_secret(&secret).await
    }

    /// Merge-patches an AccessToken's spec, as `kubectl patch --type merge` would.
    pub async fn patch_spec(&self, name: &str, spec: Value) {
        self.tokens()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .expect("AccessToken spec is patched");
    }

    /// Waits until the AccessToken reaches `phase` and returns it.
    pub async fn wait_for_phase(&self, name: &str, phase: Phase) -> AccessToken {
        let tokens = self.tokens();
        eventually(&format!("AccessToken {name} to be {phase:?}"), || async {
            let token = tokens.get(name).await.ok()?;
            (token.status.as_ref()?.phase? == phase).then_some(token)
        })
        .await
    }

    /// Waits until the Ready condition has `reason` and returns the AccessToken.
    pub async fn wait_for_reason(&self, name: &str, reason: &str) -> AccessToken {
        let tokens = self.tokens();
        eventually(
            &format!("AccessToken {name} to report {reason}"),
            || async {
                let token = tokens.get(name).await.ok()?;
                let ready = ready_condition(&token)?;
                (ready.reason == reason).then_some(token)
            },
        )
        .await
    }

    /// The token in a Secret, parsed.
    pub async fn token_in_secret(&self, secret: &str) -> Token {
        let secret = self.secrets().get(secret).await.expect("Secret exists");
        Token::parse(&secret_text(&secret, "token")).expect("the Secret holds a valid token")
    }

    /// The Events recorded for an object in this namespace.
    pub async fn events_for(&self, object: &str) -> Vec<Event> {
        Api::<Event>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default())
            .await
            .expect("events list")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(object))
            .collect()
    }

    /// Event reasons recorded for an object in this namespace.
    pub async fn event_reasons(&self, object: &str) -> Vec<String> {
        self.events_for(object)
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }

    /// The instances (`reportingInstance`: the operator's `--instance`, a pod name) that
    /// reported `TokenIssued` for `token`, one entry per occurrence (a repeated Event counts
    /// its repetitions).
    pub async fn issuers(&self, token: &str) -> Vec<String> {
        self.events_for(token)
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("TokenIssued"))
            .flat_map(|e| {
                let instance = e.reporting_instance.unwrap_or_default();
                std::iter::repeat_n(instance, e.count.unwrap_or(1).max(1) as usize)
            })
            .collect()
    }

    /// Waits until a Warning Event with `reason` was recorded for `object` (a Normal one
    /// with that reason does not count: the type is part of what people are told).
    pub async fn wait_for_warning(&self, object: &str, reason: &str) {
        eventually(
            &format!("a Warning Event {reason} for {object}"),
            || async {
                self.events_for(object)
                    .await
                    .iter()
                    .any(|e| {
                        e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning")
                    })
                    .then_some(())
            },
        )
        .await
    }

    /// Whether an Event with this reason (any type) was recorded for `object`.
    pub async fn has_event(&self, object: &str, reason: &str) -> bool {
        self.event_reasons(object).await.iter().any(|r| r == reason)
    }

    /// Waits for an Event with this reason (any type) on an object in this namespace.
    pub async fn wait_for_event(&self, object: &str, reason: &str) {
        eventually(&format!("a {reason} Event for {object}"), || async {
            self.has_event(object, reason).await.then_some(())
        })
        .await
    }
}

impl Drop for Tenant {
    /// Removes the tenant's namespace, Organization and Group, so nothing a test leaves
    /// behind is reconciled later by the cluster-wide operator of `tests/cluster_wide`.
    /// The test's operator is gone by now (declared after the Tenant), so the AccessTokens'
    /// finalizers are stripped first; their children go with the namespace. Best effort and
    /// bounded: a failing cleanup never hides the test's own result.
    fn drop(&mut self) {
        let (namespace, organization, group) = (
            self.namespace.clone(),
            self.organization.clone(),
            self.group.clone(),
        );
        let more_scopes = std::mem::take(&mut *self.more_scopes.lock().expect("lock"));
        // Own thread and runtime: Drop cannot await, and the test's runtime may be unwinding.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup");
            runtime.block_on(async {
                let work = async {
                    let client = admin_client().await;
                    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &namespace);
                    let strip = Patch::Merge(json!({"metadata": {"finalizers": null}}));
                    for token in tokens.list(&ListParams::default()).await.ok()?.items {
                        let _ = tokens
                            .patch(&token.name_any(), &PatchParams::default(), &strip)
                            .await;
                    }
                    let delete = kube::api::DeleteParams::default();
                    let _ = Api::<Namespace>::all(client.clone())
                        .delete(&namespace, &delete)
                        .await;
                    let _ = Api::<Group>::all(client.clone())
                        .delete(&group, &delete)
                        .await;
                    let _ = Api::<Organization>::all(client.clone())
                        .delete(&organization, &delete)
                        .await;
                    for (kind, name) in &more_scopes {
                        let _ = match kind {
                            ScopeKind::Organization => Api::<Organization>::all(client.clone())
                                .delete(name, &delete)
                                .await
                                .map(|_| ()),
                            ScopeKind::Group => Api::<Group>::all(client.clone())
                                .delete(name, &delete)
                                .await
                                .map(|_| ()),
                        };
                    }
                    // Gone, not just Terminating: a token still listed there could meet the
                    // next cluster-wide operator, which would put its finalizer back.
                    let namespaces: Api<Namespace> = Api::all(client);
                    while namespaces.get_opt(&namespace).await.ok()?.is_some() {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    Some(())
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), work).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// The Ready condition of an AccessToken.
pub fn ready_condition(
    token: &AccessToken,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    token
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// A Secret key's value as text.
pub fn secret_text(secret: &Secret, key: &str) -> String {
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("Secret {} has key {key}", secret.name_any()));
    String::from_utf8(value.0.clone()).expect("UTF-8")
}
