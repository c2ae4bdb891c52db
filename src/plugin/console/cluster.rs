//! Everything the console asks of kube-apiserver, always as the user of the kubeconfig: what
//! they administer (SelfSubjectRulesReview), whether they may act (SelfSubjectAccessReview),
//! the scopes, their tokens, and the writes. The console has no right of its own.

use std::collections::BTreeSet;

use futures::{Stream, StreamExt as _, stream};
use k8s_openapi::{
    api::{
        authentication::v1::SelfSubjectReview,
        authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
            SelfSubjectRulesReview, SelfSubjectRulesReviewSpec,
        },
        core::v1::Secret,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};

use crate::{
    api::{API_GROUP, AccessToken, Group, Organization, Phase},
    domain::policy::{EffectivePolicy, combine},
};

/// The user's name as kube-apiserver authenticates them (SelfSubjectReview).
pub async fn who_am_i(client: &Client) -> String {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await;
    review
        .ok()
        .and_then(|r| r.status?.user_info?.username)
        .unwrap_or_else(|| "your kubeconfig user".to_string())
}

/// An Organization or a Group, as the paths of the console name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An Organization (`/organizations/NAME`).
    Organization,
    /// A Group (`/groups/NAME`).
    Group,
}

impl Kind {
    /// The plural resource name, also the console's path segment.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Organization => "organizations",
            Kind::Group => "groups",
        }
    }

    /// The kind from a path segment.
    pub fn from_resource(segment: &str) -> Option<Self> {
        match segment {
            "organizations" => Some(Kind::Organization),
            "groups" => Some(Kind::Group),
            _ => None,
        }
    }

    /// How the page calls this kind ("Organization", "Group").
    pub fn label(self) -> &'static str {
        match self {
            Kind::Organization => "Organization",
            Kind::Group => "Group",
        }
    }
}

/// The message of an API server refusal as it came, or the client's error.
pub fn message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// A scope as its page shows it.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Organization or Group.
    pub kind: Kind,
    /// `metadata.name`.
    pub name: String,
    /// `spec.displayName`, else the name.
    pub display_name: String,
    /// A Group's organization.
    pub organization: Option<String>,
    /// `spec.tokenNamespaces`: where this scope's tokens live.
    pub namespaces: Vec<String>,
    /// The policy new tokens are held to (a Group's tightened by its organization's when readable).
    pub policy: EffectivePolicy,
    /// `Err(reason)` when the user lacks the scope's admin right.
    pub may_admin: Result<(), String>,
}

/// Reads the scope and asks whether the user is its admin; the API server's refusal as is.
pub async fn load_scope(client: &Client, kind: Kind, name: &str) -> Result<Scope, String> {
    let (display_name, organization, namespaces, policy) = match kind {
        Kind::Organization => {
            let org = Api::<Organization>::all(client.clone()).get(name).await;
            let spec = org.map_err(|e| message(&e))?.spec;
            let policy = combine(spec.token_policy.as_ref(), None);
            (spec.display_name, None, spec.token_namespaces, policy)
        }
        Kind::Group => {
            let spec = Api::<Group>::all(client.clone())
                .get(name)
                .await
                .map_err(|e| message(&e))?
                .spec;
            // The organization's policy applies too; a group admin may not be able to read it.
            let org = Api::<Organization>::all(client.clone())
                .get_opt(&spec.organization)
                .await
                .ok()
                .flatten();
            let org_policy = org.as_ref().and_then(|o| o.spec.token_policy.as_ref());
            let policy = combine(org_policy, spec.token_policy.as_ref());
            let organization = Some(spec.organization);
            (
                spec.display_name,
                organization,
                spec.token_namespaces,
                policy,
            )
        }
    };
    let may_admin = may_admin(client, kind, name, organization.as_deref()).await;
    Ok(Scope {
        kind,
        name: name.to_string(),
        display_name: display_name.unwrap_or_else(|| name.to_string()),
        organization,
        namespaces,
        policy,
        may_admin,
    })
}

async fn allowed(client: &Client, resource: &str, name: &str, verb: &str) -> Result<bool, String> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(API_GROUP.to_string()),
                resource: Some(resource.to_string()),
                name: Some(name.to_string()),
                verb: Some(verb.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| message(&e))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Whether the user holds the admin right of the scope (verb `admin`, as the admission
/// policy asks); for a Group, its organization's right counts too.
async fn may_admin(
    client: &Client,
    kind: Kind,
    name: &str,
    organization: Option<&str>,
) -> Result<(), String> {
    if allowed(client, kind.resource(), name, "admin").await? {
        return Ok(());
    }
    if let Some(org) = organization
        && allowed(client, "organizations", org, "admin").await?
    {
        return Ok(());
    }
    let role = match kind {
        Kind::Organization => "Organization Admin",
        Kind::Group => "Group Admin",
    };
    Err(format!(
        "You do not have the {role} role of {name} (verb \"admin\" on {}.{API_GROUP} \"{name}\").",
        kind.resource()
    ))
}

/// Whether `token` is scoped directly to `scope`.
pub fn belongs_to(token: &AccessToken, scope: &Scope) -> bool {
    let named = match scope.kind {
        Kind::Organization => token.spec.organization.as_deref(),
        Kind::Group => token.spec.group.as_deref(),
    };
    named == Some(scope.name.as_str())
}

/// The scope's tokens in each of its namespaces, sorted by name; a namespace the user may
/// not list gives the API server's message instead.
pub async fn tokens(client: &Client, scope: &Scope) -> (Vec<AccessToken>, Vec<String>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for namespace in &scope.namespaces {
        let api: Api<AccessToken> = Api::namespaced(client.clone(), namespace);
        match api.list(&ListParams::default()).await {
            Ok(list) => found.extend(list.items.into_iter().filter(|t| belongs_to(t, scope))),
            Err(error) => errors.push(message(&error)),
        }
    }
    found.sort_by_key(|a| (a.name_any(), a.namespace()));
    (found, errors)
}

/// One item per change to any AccessToken in `namespaces` (a watch each, as the user).
pub fn changes(client: &Client, namespaces: &[String]) -> impl Stream<Item = ()> + Send + use<> {
    let watches = namespaces.iter().map(|namespace| {
        let api: Api<AccessToken> = Api::namespaced(client.clone(), namespace);
        // Backoff: a watch the user may not make must not become a hot loop of errors.
        watcher(api, watcher::Config::default())
            .default_backoff()
            .filter_map(|event| std::future::ready(event.ok().map(drop)))
            .boxed()
    });
    stream::select_all(watches)
}

/// The Organizations and Groups the user administers, from the rules kube-apiserver reports
/// for them (SelfSubjectRulesReview: needs no list right), each read with `get`.
#[derive(Debug, Default)]
pub struct Administered {
    /// (name, display name).
    pub organizations: Vec<(String, String)>,
    /// (name, display name, organization).
    pub groups: Vec<(String, String, String)>,
    /// What could not be read or decided, as the API server said it.
    pub notes: Vec<String>,
}

/// The names the rules grant verb `admin` on, per resource; `None` for "every name".
fn admin_names(review: &SelfSubjectRulesReview, resource: &str) -> Option<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let matches = |list: &Vec<String>, wanted: &str| list.iter().any(|v| v == wanted || v == "*");
    for rule in &review.status.as_ref()?.resource_rules {
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        if matches(&rule.verbs, "admin")
            && matches(&groups, API_GROUP)
            && matches(&resources, resource)
        {
            match &rule.resource_names {
                Some(listed) if !listed.is_empty() => names.extend(listed.iter().cloned()),
                _ => return None,
            }
        }
    }
    Some(names)
}

async fn names_or_all<K>(
    api: &Api<K>,
    names: Option<BTreeSet<String>>,
    notes: &mut Vec<String>,
) -> Vec<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(names) = names else {
        return match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(error) => {
                notes.push(message(&error));
                Vec::new()
            }
        };
    };
    let mut found = Vec::new();
    for name in names {
        match api.get(&name).await {
            Ok(object) => found.push(object),
            Err(error) => notes.push(message(&error)),
        }
    }
    found
}

/// The start page's lists. Rules are per namespace, so the review asks about the
/// kubeconfig's namespace; cluster-wide grants (how scope admins are made) apply in each.
pub async fn administered(client: &Client, namespace: &str) -> Result<Administered, String> {
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec {
            namespace: Some(namespace.to_string()),
        },
        ..Default::default()
    };
    let review = Api::<SelfSubjectRulesReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| message(&e))?;
    let mut result = Administered::default();
    if let Some(reason) = review
        .status
        .as_ref()
        .and_then(|s| s.evaluation_error.clone())
    {
        result.notes.push(format!(
            "The rules kube-apiserver reported may be incomplete: {reason}"
        ));
    }
    let orgs = Api::<Organization>::all(client.clone());
    for org in names_or_all(
        &orgs,
        admin_names(&review, "organizations"),
        &mut result.notes,
    )
    .await
    {
        let display = org
            .spec
            .display_name
            .clone()
            .unwrap_or_else(|| org.name_any());
        result.organizations.push((org.name_any(), display));
    }
    let groups = Api::<Group>::all(client.clone());
    for group in names_or_all(&groups, admin_names(&review, "groups"), &mut result.notes).await {
        let display = group
            .spec
            .display_name
            .clone()
            .unwrap_or_else(|| group.name_any());
        result
            .groups
            .push((group.name_any(), display, group.spec.organization.clone()));
    }
    Ok(result)
}

/// The groups of `organization` the user can see: all of them if they may list Groups,
/// else those they administer.
pub async fn groups_of(
    client: &Client,
    organization: &str,
    namespace: &str,
) -> (Vec<(String, String)>, Option<String>) {
    let listed = Api::<Group>::all(client.clone())
        .list(&ListParams::default())
        .await;
    let (groups, note) = match listed {
        Ok(list) => (
            list.items
                .into_iter()
                .map(|g| {
                    (
                        g.name_any(),
                        g.spec.display_name.clone().unwrap_or_else(|| g.name_any()),
                        g.spec.organization,
                    )
                })
                .collect(),
            None,
        ),
        Err(error) => {
            let known = administered(client, namespace)
                .await
                .map(|a| a.groups)
                .unwrap_or_default();
            (known, Some(message(&error)))
        }
    };
    let mine = groups
        .into_iter()
        .filter(|(_, _, org)| org == organization)
        .map(|(name, display, _)| (name, display))
        .collect();
    (mine, note)
}

/// What the Create dialog sends.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewToken {
    /// Token Name: the AccessToken's `metadata.name`.
    pub name: String,
    /// Namespace (one of the scope's token namespaces).
    pub namespace: String,
    /// Expiration Date, `YYYY-MM-DD`; the token expires at its start (UTC).
    pub expires_on: String,
    /// Admin Role assignment.
    pub admin: bool,
}

/// The expiry of a date from the dialog: that day at 00:00 UTC.
pub fn expiry_of(date: &str) -> Result<Timestamp, String> {
    let day: k8s_openapi::jiff::civil::Date = date
        .parse()
        .map_err(|_| format!("Expiration Date {date:?} is not a date (YYYY-MM-DD)."))?;
    day.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(|e| format!("Expiration Date {date:?}: {e}"))
}

fn manifest(scope: &Scope, new: &NewToken, expires_at: Timestamp) -> Result<AccessToken, String> {
    let scope_field = match scope.kind {
        Kind::Organization => "organization",
        Kind::Group => "group",
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1",
        "kind": "AccessToken",
        "metadata": {"name": new.name, "namespace": new.namespace},
        "spec": {scope_field: scope.name, "expiresAt": expires_at.to_string(), "admin": new.admin},
    }))
    .map_err(|e| format!("Token Name {:?}: {e}", new.name))
}

/// How long Create waits for the operator to issue the token.
const ISSUE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Creates the AccessToken as the user, waits until it is Active, and reads its value from
/// the Secret once. Every refusal comes back as the API server or the operator worded it.
pub async fn create(client: &Client, scope: &Scope, new: &NewToken) -> Result<String, String> {
    if !scope.namespaces.contains(&new.namespace) {
        return Err(format!(
            "Namespace {:?} is not one of this scope's token namespaces.",
            new.namespace
        ));
    }
    let expires_at = expiry_of(&new.expires_on)?;
    let api: Api<AccessToken> = Api::namespaced(client.clone(), &new.namespace);
    let params = PostParams {
        field_manager: Some(super::super::FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    api.create(&params, &manifest(scope, new, expires_at)?)
        .await
        .map_err(|e| message(&e))?;
    let issued = tokio::time::timeout(ISSUE_DEADLINE, wait_until_issued(&api, &new.name)).await;
    let token = issued.map_err(|_| {
        format!(
            "The token was created but is not Active after {} s: see its Status.",
            ISSUE_DEADLINE.as_secs()
        )
    })??;
    let secret_name = token
        .status
        .and_then(|s| s.secret_name)
        .unwrap_or(new.name.clone());
    let secret = Api::<Secret>::namespaced(client.clone(), &new.namespace)
        .get(&secret_name)
        .await
        .map_err(|e| {
            format!(
                "The token is Active, but its Secret could not be read: {}",
                message(&e)
            )
        })?;
    secret
        .data
        .and_then(|mut d| d.remove("token"))
        .and_then(|v| String::from_utf8(v.0).ok())
        .ok_or_else(|| format!("Secret {secret_name} holds no token."))
}

/// Reasons of `Ready=False` that no retry fixes: the token waits for someone to change
/// something, so the dialog says why instead of waiting.
const WAITS_FOR_A_CHANGE: [&str; 11] = [
    "PolicyViolation",
    "NamespaceNotAllowed",
    "OrganizationNotFound",
    "GroupNotFound",
    "GroupOrganizationNotFound",
    "SecretConflict",
    "TechnicalUserConflict",
    "InvalidSpec",
    "ScopeSuspended",
    "ScopeChanged",
    "GroupNewerThanToken",
];

/// Waits for Active, or for the operator's reason why the token cannot be issued.
async fn wait_until_issued(api: &Api<AccessToken>, name: &str) -> Result<AccessToken, String> {
    let mut events = std::pin::pin!(kube::runtime::watcher::watch_object(api.clone(), name));
    while let Some(event) = events.next().await {
        let Some(token) = event.map_err(|e| e.to_string())? else {
            return Err("The token was deleted before it was issued.".to_string());
        };
        let status = token.status.clone().unwrap_or_default();
        if status.phase == Some(Phase::Active) && status.token_id.is_some() {
            return Ok(token);
        }
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        if let Some(ready) =
            ready.filter(|c| c.status == "False" && WAITS_FOR_A_CHANGE.contains(&c.reason.as_str()))
        {
            return Err(format!(
                "The token was created but cannot be issued: {} ({}).",
                ready.message, ready.reason
            ));
        }
    }
    Err("The watch on the new token ended.".to_string())
}

/// A row action of the Status menu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `spec.revoked: true`.
    Revoke,
    /// `spec.revoked: false`.
    Reenable,
    /// A new `spec.rotation.trigger`.
    Rotate,
    /// Delete the AccessToken.
    Delete,
}

impl Action {
    /// The action named in a path.
    pub fn from_path(segment: &str) -> Option<Self> {
        match segment {
            "revoke" => Some(Action::Revoke),
            "reenable" => Some(Action::Reenable),
            "rotate" => Some(Action::Rotate),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// Runs `action` on the AccessToken as the user.
pub async fn act(
    client: &Client,
    namespace: &str,
    name: &str,
    action: Action,
) -> Result<(), String> {
    let api: Api<AccessToken> = Api::namespaced(client.clone(), namespace);
    let patch = match action {
        Action::Delete => {
            return api
                .delete(name, &DeleteParams::default())
                .await
                .map(drop)
                .map_err(|e| message(&e));
        }
        Action::Revoke => serde_json::json!({"spec": {"revoked": true}}),
        Action::Reenable => serde_json::json!({"spec": {"revoked": false}}),
        Action::Rotate => {
            serde_json::json!({"spec": {"rotation": {"trigger": Timestamp::now().to_string()}}})
        }
    };
    let params = PatchParams {
        field_manager: Some(super::super::FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    api.patch(name, &params, &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|e| message(&e))
}
