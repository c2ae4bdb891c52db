//! The console's pages, rendered on the server. Every value from the cluster goes through
//! `escape`; the only script is the embedded `console.js` (the CSP allows nothing inline).

use std::fmt::Write as _;

use k8s_openapi::jiff::{SignedDuration, Timestamp, tz::TimeZone};
use kube::ResourceExt as _;

use super::cluster::{Administered, Kind, Scope};
use crate::api::{AccessToken, Phase, Role};

/// Text made safe for HTML content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body`.
pub fn page(title: &str, identity: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Access Tokens</title>
<link rel="stylesheet" href="/assets/console.css">
<script src="/assets/console.js" defer></script>
</head>
<body>
<header class="topbar"><a class="brand" href="/">Access Tokens</a><span class="identity">{identity}</span></header>
<main id="main">
{body}
</main>
</body>
</html>
"#,
        title = escape(title),
        identity = escape(identity),
    )
}

/// A page that only says what went wrong (the API server's words).
pub fn error_page(identity: &str, heading: &str, message: &str) -> String {
    let body = format!(
        r#"<nav class="breadcrumb" aria-label="Breadcrumb"><a href="/">Home</a></nav>
<h1>{}</h1>
<div class="notice error" role="alert">{}</div>"#,
        escape(heading),
        escape(message)
    );
    page(heading, identity, &body)
}

fn scope_links(kind: Kind, items: &[(String, String)], empty: &str) -> String {
    if items.is_empty() {
        return format!(r#"<p class="muted">{}</p>"#, escape(empty));
    }
    let mut list = String::from(r#"<ul class="scope-list">"#);
    for (name, display) in items {
        let _ = write!(
            list,
            r#"<li><a href="/{}/{}"><span class="scope-name">{}</span><span class="muted">{}</span></a></li>"#,
            kind.resource(),
            escape(name),
            escape(display),
            escape(name)
        );
    }
    list.push_str("</ul>");
    list
}

/// The start page: the Organizations and Groups the user administers.
pub fn start(identity: &str, found: &Administered) -> String {
    let groups: Vec<(String, String)> = found
        .groups
        .iter()
        .map(|(name, display, _)| (name.clone(), display.clone()))
        .collect();
    let mut notes = String::new();
    for note in &found.notes {
        let _ = write!(notes, r#"<div class="notice">{}</div>"#, escape(note));
    }
    let body = format!(
        r#"<h1>Manage Access Tokens</h1>
<p class="lead">The Organizations and Groups you administer. Access tokens at organization or group level are backed by a Technical User, a system-created account that holds the token's permissions.</p>
{notes}
<div class="cards">
<section class="card" aria-labelledby="orgs-heading"><h2 id="orgs-heading">Organizations</h2>{orgs}</section>
<section class="card" aria-labelledby="groups-heading"><h2 id="groups-heading">Groups</h2>{groups}</section>
</div>
<p class="muted small">Found with a SelfSubjectRulesReview: the scopes on which your kube user holds verb "admin" in API group iam.accesstoken.io (the Organization Admin and Group Admin roles).</p>"#,
        orgs = scope_links(
            Kind::Organization,
            &found.organizations,
            "You are not an Organization Admin of any organization."
        ),
        groups = scope_links(
            Kind::Group,
            &groups,
            "You are not a Group Admin of any group."
        ),
    );
    page("Manage Access Tokens", identity, &body)
}

/// The heading, breadcrumb and tabs of a scope page.
fn scope_header(scope: &Scope, tab: &str) -> String {
    let mut tabs = vec![(
        "Access Tokens",
        format!("/{}/{}", scope.kind.resource(), escape(&scope.name)),
    )];
    if scope.kind == Kind::Organization {
        tabs.push((
            "Groups",
            format!("/organizations/{}/groups", escape(&scope.name)),
        ));
    }
    let mut nav = String::from(r#"<nav class="tabs" aria-label="Sections">"#);
    for (label, href) in tabs {
        let current = if label == tab {
            r#" aria-current="page""#
        } else {
            ""
        };
        let _ = write!(nav, r#"<a href="{href}"{current}>{label}</a>"#);
    }
    nav.push_str("</nav>");
    let parent = match &scope.organization {
        Some(org) => format!(r#" › <a href="/organizations/{0}">{0}</a>"#, escape(org)),
        None => String::new(),
    };
    format!(
        r#"<nav class="breadcrumb" aria-label="Breadcrumb"><a href="/">Home</a>{parent} › {kind}</nav>
<h1>{display} <span class="kind-badge">{kind}</span></h1>
<p class="muted">{name}</p>
{nav}"#,
        kind = scope.kind.label(),
        display = escape(&scope.display_name),
        name = escape(&scope.name),
    )
}

/// The Groups tab of an Organization page.
pub fn groups_tab(
    identity: &str,
    scope: &Scope,
    groups: &[(String, String)],
    note: Option<&str>,
) -> String {
    let note = note
        .map(|n| {
            format!(
                r#"<div class="notice">Showing only the groups you administer: {}</div>"#,
                escape(n)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "{}\n{note}\n{}",
        scope_header(scope, "Groups"),
        scope_links(Kind::Group, groups, "No groups to show.")
    );
    page(&scope.display_name, identity, &body)
}

/// The Access Tokens tab: the table, the Create button and the dialogs.
pub fn tokens_tab(identity: &str, scope: &Scope, rows: &str, now: Timestamp) -> String {
    let denied = scope.may_admin.as_ref().err();
    let notice = denied
        .map(|reason| format!(r#"<div class="notice" id="admin-notice">{} Token actions are disabled; the API server would refuse them.</div>"#, escape(reason)))
        .unwrap_or_default();
    let body = format!(
        r#"{header}
<section class="panel" aria-labelledby="tokens-heading" data-scope="/{resource}/{name}">
<div class="toolbar"><h2 id="tokens-heading">Access Tokens</h2><button type="button" class="primary" id="create-open">Create Access Token</button></div>
{notice}
<div class="notice error" role="alert" id="action-error" hidden></div>
<table class="tokens">
<thead><tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col">Namespace</th><th scope="col">Expires</th><th scope="col">Last Used</th><th scope="col">Status</th></tr></thead>
<tbody id="token-rows">{rows}</tbody>
</table>
</section>
{create}
{copy}
{confirm}"#,
        header = scope_header(scope, "Access Tokens"),
        resource = scope.kind.resource(),
        name = escape(&scope.name),
        create = create_dialog(scope, now),
        copy = COPY_DIALOG,
        confirm = CONFIRM_DIALOG,
    );
    page(&scope.display_name, identity, &body)
}

const COPY_DIALOG: &str = r#"<dialog id="copy-dialog" aria-labelledby="copy-title">
<h2 id="copy-title">Access Token</h2>
<p class="warning">Copy and store the access token in a secure location. You will not be able to view the token again after you leave or refresh the page.</p>
<div class="copy-row"><label for="token-value" class="visually-hidden">Access token value</label><input id="token-value" class="mono" readonly autocomplete="off" spellcheck="false"><button type="button" class="primary" id="copy-button">Copy</button></div>
<p class="muted small" id="copy-where"></p>
<p class="small" role="status" id="copy-status"></p>
<div class="actions"><button type="button" class="secondary" data-close>Close</button></div>
</dialog>"#;

const CONFIRM_DIALOG: &str = r#"<dialog id="confirm-dialog" aria-labelledby="confirm-title">
<h2 id="confirm-title">Delete Token</h2>
<p id="confirm-text"></p>
<div class="notice error" role="alert" id="confirm-error" hidden></div>
<div class="actions"><button type="button" class="secondary" data-close>Cancel</button><button type="button" class="danger" id="confirm-button">Delete Token</button></div>
</dialog>"#;

fn days(duration: SignedDuration) -> i64 {
    duration.as_secs() / 86_400
}

fn date_of(at: Timestamp) -> String {
    at.to_zoned(TimeZone::UTC).date().to_string()
}

/// Expiration Date bounds: from tomorrow to the last day whose start is within
/// `maxLifetime`; the default is `defaultLifetime` from now, kept within the bounds.
pub fn expiry_bounds(scope: &Scope, now: Timestamp) -> (String, Option<String>, String) {
    let min = date_of(now + SignedDuration::from_hours(24));
    let max = scope.policy.max_lifetime.map(|m| date_of(now + m));
    let mut default = date_of(now + scope.policy.default_lifetime);
    if let Some(max) = &max
        && default > *max
    {
        default = max.clone();
    }
    if default < min {
        default = min.clone();
    }
    (min, max, default)
}

fn namespace_field(scope: &Scope) -> String {
    match scope.namespaces.as_slice() {
        [only] => format!(
            r#"<input type="hidden" id="token-namespace" name="namespace" value="{}">"#,
            escape(only)
        ),
        several => {
            let mut options = String::new();
            for namespace in several {
                let _ = write!(options, r#"<option>{}</option>"#, escape(namespace));
            }
            format!(
                r#"<div class="field"><label for="token-namespace">Namespace</label><select id="token-namespace" name="namespace" aria-describedby="namespace-help">{options}</select><p class="help" id="namespace-help">Where the AccessToken and its Secret are created.</p></div>"#
            )
        }
    }
}

fn create_dialog(scope: &Scope, now: Timestamp) -> String {
    let (min, max, default) = expiry_bounds(scope, now);
    let (scope_word, admin_scope) = match scope.kind {
        Kind::Organization => ("Organization", "organization admin scope"),
        Kind::Group => ("Group", "group admin scope"),
    };
    let limit = match (scope.policy.max_lifetime, &max) {
        (Some(m), Some(max)) => format!(
            "At most {} days ({max}): the {scope_word}'s token policy.",
            days(m)
        ),
        _ => "No maximum lifetime is set for this scope.".to_string(),
    };
    let max_attr = max.map(|m| format!(r#" max="{m}""#)).unwrap_or_default();
    let warn = scope
        .may_admin
        .as_ref()
        .err()
        .map(|r| {
            format!(
                r#"<div class="notice">{} The API server decides when you click Create.</div>"#,
                escape(r)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<dialog id="create-dialog" aria-labelledby="create-title">
<form id="create-form" novalidate>
<h2 id="create-title">Create Access Token</h2>
{warn}
<div class="field"><label for="token-name">Token Name</label><input id="token-name" name="name" required maxlength="63" autocomplete="off" spellcheck="false" aria-describedby="token-name-help"><p class="help" id="token-name-help">Lowercase letters, digits and '-'. It names the AccessToken and its Secret.</p></div>
{namespace}
<div class="field"><label for="token-expires">Expiration Date</label><input type="date" id="token-expires" name="expiresOn" required min="{min}"{max_attr} value="{default}" aria-describedby="token-expires-help"><p class="help" id="token-expires-help">The token stops working at the start of this day (UTC). {limit}</p></div>
<div class="field checkbox"><input type="checkbox" id="token-admin" name="admin" aria-describedby="token-admin-help"><label for="token-admin">Admin Role</label><p class="help" id="token-admin-help">Assign the admin role: this {scope_word} level token will have {admin_scope} in {display}. Otherwise it gets the user role.</p></div>
<div class="notice error" role="alert" id="create-error" hidden></div>
<p class="small" role="status" id="create-status"></p>
<div class="actions"><button type="button" class="secondary" data-close>Cancel</button><button type="submit" class="primary" id="create-submit">Create</button></div>
</form>
</dialog>"#,
        namespace = namespace_field(scope),
        display = escape(&scope.display_name),
    )
}

/// "in 12 days", "3 hours ago": how people read a time.
pub fn relative(at: Timestamp, now: Timestamp) -> String {
    let seconds = at.as_second() - now.as_second();
    let magnitude = seconds.unsigned_abs();
    if magnitude < 60 {
        return "just now".to_string();
    }
    let (size, unit) = match magnitude {
        m if m < 3_600 => (60, "minute"),
        m if m < 86_400 => (3_600, "hour"),
        m if m < 86_400 * 60 => (86_400, "day"),
        m if m < 86_400 * 730 => (86_400 * 30, "month"),
        _ => (86_400 * 365, "year"),
    };
    // Rounded to the nearest unit: a token issued a moment ago for 30 days expires "in 30 days".
    let count = (magnitude + size / 2) / size;
    let plural = if count == 1 { "" } else { "s" };
    if seconds > 0 {
        format!("in {count} {unit}{plural}")
    } else {
        format!("{count} {unit}{plural} ago")
    }
}

fn time_cell(at: Option<Timestamp>, now: Timestamp, never: &str) -> String {
    match at {
        Some(at) => format!(
            r#"<time datetime="{at}" title="{exact}">{rel}</time>"#,
            exact = at.to_zoned(TimeZone::UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            rel = relative(at, now)
        ),
        None => format!(r#"<span class="muted">{never}</span>"#),
    }
}

fn role_label(token: &AccessToken) -> &'static str {
    let role = token.status.as_ref().and_then(|s| s.role);
    match (role, token.spec.group.is_some(), token.spec.admin) {
        (Some(Role::OrganizationAdmin), ..) | (None, false, true) => "Organization Admin",
        (Some(Role::OrganizationUser), ..) | (None, false, false) => "Organization User",
        (Some(Role::GroupAdmin), ..) | (None, true, true) => "Group Admin",
        (Some(Role::GroupUser), ..) | (None, true, false) => "Group User",
    }
}

/// The GitOps tool that manages `token`, from the marks Argo CD and Flux leave on it.
fn gitops_tool(token: &AccessToken) -> Option<&'static str> {
    let labels = token.labels();
    let annotations = token.annotations();
    if annotations.contains_key("argocd.argoproj.io/tracking-id")
        || labels.contains_key("argocd.argoproj.io/instance")
    {
        Some("Argo CD")
    } else if labels.keys().any(|k| {
        k.starts_with("kustomize.toolkit.fluxcd.io/") || k.starts_with("helm.toolkit.fluxcd.io/")
    }) {
        Some("Flux")
    } else {
        None
    }
}

fn menu_item(action: &str, label: &str, token: &AccessToken, denied: Option<&String>) -> String {
    let disabled = denied
        .map(|reason| {
            format!(
                r#" disabled aria-disabled="true" title="{}""#,
                escape(reason)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<button type="button" role="menuitem" data-action="{action}" data-namespace="{ns}" data-name="{name}"{disabled}>{label}</button>"#,
        ns = escape(&token.namespace().unwrap_or_default()),
        name = escape(&token.name_any()),
    )
}

fn status_cell(index: usize, token: &AccessToken, denied: Option<&String>) -> String {
    let phase = token.status.as_ref().and_then(|s| s.phase);
    let phase_name = crate::observability::token_series::phase_name(phase);
    let mut items = String::new();
    if phase == Some(Phase::Revoked) || token.spec.revoked {
        items.push_str(&menu_item("reenable", "Re-enable Token", token, denied));
    } else {
        items.push_str(&menu_item("revoke", "Revoke Token", token, denied));
    }
    if phase == Some(Phase::Active) {
        items.push_str(&menu_item("rotate", "Rotate Token", token, denied));
    }
    items.push_str(&menu_item("delete", "Delete Token", token, denied));
    let mut reason = denied
        .map(|r| format!(r#"<p class="menu-reason" role="note">{}</p>"#, escape(r)))
        .unwrap_or_default();
    if let Some(tool) = gitops_tool(token) {
        let _ = write!(
            reason,
            r#"<p class="menu-reason" role="note">Managed by {tool}: change it in its source too, or {tool} reverts this edit.</p>"#
        );
    }
    format!(
        r#"<div class="status"><button type="button" class="status-button phase-{lower}" aria-haspopup="menu" aria-expanded="false" aria-controls="menu-{index}" aria-label="{phase_name}: actions for {name}">{phase_name}<span aria-hidden="true" class="caret">▾</span></button><div class="menu" role="menu" id="menu-{index}" hidden>{items}{reason}</div></div>"#,
        lower = phase_name.to_lowercase(),
        name = escape(&token.name_any()),
    )
}

/// The table's rows (also sent alone when the watch reports a change).
pub fn rows(tokens: &[AccessToken], errors: &[String], scope: &Scope, now: Timestamp) -> String {
    let denied = scope.may_admin.as_ref().err();
    let mut out = String::new();
    for message in errors {
        let _ = write!(
            out,
            r#"<tr class="row-error"><td colspan="6" role="alert">{}</td></tr>"#,
            escape(message)
        );
    }
    if tokens.is_empty() && errors.is_empty() {
        out.push_str(r#"<tr class="empty"><td colspan="6">No access tokens yet. Create one with "Create Access Token".</td></tr>"#);
    }
    for (index, token) in tokens.iter().enumerate() {
        let status = token.status.clone().unwrap_or_default();
        let display = token
            .spec
            .display_name
            .as_deref()
            .map(|d| format!(r#"<span class="muted small">{}</span>"#, escape(d)))
            .unwrap_or_default();
        let _ = write!(
            out,
            r#"<tr data-token="{ns}/{name}"><td><span class="token-name">{name}</span>{display}</td><td>{role}</td><td>{ns}</td><td>{expires}</td><td>{used}</td><td>{status_cell}</td></tr>"#,
            ns = escape(&token.namespace().unwrap_or_default()),
            name = escape(&token.name_any()),
            role = role_label(token),
            expires = time_cell(status.expires_at.map(|t| t.0), now, "Not issued"),
            used = time_cell(status.last_used_at.map(|t| t.0), now, "Never"),
            status_cell = status_cell(index, token, denied),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_people_read_them() {
        let now: Timestamp = "2026-12-05T10:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(relative(at("2026-12-17T10:00:00Z"), now), "in 12 days");
        assert_eq!(relative(at("2026-12-05T07:00:00Z"), now), "3 hours ago");
        assert_eq!(relative(at("2026-12-05T10:00:30Z"), now), "just now");
        assert_eq!(relative(at("2026-12-05T10:01:00Z"), now), "in 1 minute");
        assert_eq!(relative(at("2027-06-05T10:00:00Z"), now), "in 6 months");
        assert_eq!(relative(at("2027-01-04T09:59:50Z"), now), "in 30 days");
    }

    fn scope(namespaces: &[&str], max_days: Option<i64>) -> Scope {
        Scope {
            kind: Kind::Organization,
            name: "acme".into(),
            display_name: "ACME <Corp>".into(),
            organization: None,
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            policy: crate::domain::policy::EffectivePolicy {
                max_lifetime: max_days.map(|d| SignedDuration::from_hours(24 * d)),
                default_lifetime: SignedDuration::from_hours(24 * 30),
                ..Default::default()
            },
            may_admin: Ok(()),
        }
    }

    #[test]
    fn the_expiration_date_stays_within_the_policy() {
        let now: Timestamp = "2026-12-05T10:00:00Z".parse().unwrap();
        let bounded = expiry_bounds(&scope(&["a"], Some(7)), now);
        assert_eq!(
            bounded,
            (
                "2026-12-06".into(),
                Some("2026-12-12".into()),
                "2026-12-12".into()
            )
        );
        let open = expiry_bounds(&scope(&["a"], None), now);
        assert_eq!(open, ("2026-12-06".into(), None, "2027-01-04".into()));
    }

    #[test]
    fn the_namespace_is_asked_only_when_there_is_a_choice() {
        assert!(namespace_field(&scope(&["a"], None)).contains(r#"type="hidden""#));
        let choice = namespace_field(&scope(&["a", "b"], None));
        assert!(
            choice.contains("<select") && choice.contains("<option>b</option>"),
            "{choice}"
        );
        let dialog = create_dialog(&scope(&["a"], Some(90)), Timestamp::now());
        for label in [
            "Token Name",
            "Expiration Date",
            "Admin Role",
            "organization admin scope",
            "ACME &lt;Corp&gt;",
        ] {
            assert!(dialog.contains(label), "{label} in {dialog}");
        }
    }

    #[test]
    fn cluster_text_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">'&"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
