//! Resolution of an AccessToken's scope against the Organizations and Groups it names. Pure:
//! the caller passes lookups, so this is tested without an API server.

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::api::{AccessTokenSpec, Group, Organization, Reason, Role, Scope, ScopeKind};

/// Why a token's scope is not usable. The message is safe to show (it names only objects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeProblem {
    /// The condition and Event reason.
    pub reason: Reason,
    /// A sentence for people.
    pub message: String,
}

/// A scope that exists and admits the token's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedScope {
    /// Where the token acts, with the uid of the object it names.
    pub scope: Scope,
    /// The role it holds there.
    pub role: Role,
    /// When the Group of a group token was created (`None` for organization tokens): a group
    /// token is issued only if it is newer than its Group (see `plan::unproven_admission`).
    pub group_created: Option<Timestamp>,
}

/// Resolves and authorises the scope of a token living in `namespace`. Objects being deleted
/// count as absent, so that a scope on its way out stops admitting tokens at once.
pub fn resolve_scope(
    namespace: &str,
    spec: &AccessTokenSpec,
    organization: impl Fn(&str) -> Option<std::sync::Arc<Organization>>,
    group: impl Fn(&str) -> Option<std::sync::Arc<Group>>,
) -> Result<ResolvedScope, ScopeProblem> {
    match (&spec.organization, &spec.group) {
        (Some(org_name), None) => {
            let org = organization(org_name)
                .filter(|o| o.meta().deletion_timestamp.is_none())
                .ok_or_else(|| ScopeProblem {
                    reason: Reason::OrganizationNotFound,
                    message: format!("Organization {org_name:?} does not exist"),
                })?;
            admit(
                namespace,
                &org.spec.token_namespaces,
                "Organization",
                org_name,
            )?;
            Ok(ResolvedScope {
                scope: Scope {
                    kind: ScopeKind::Organization,
                    name: org_name.clone(),
                    organization: org_name.clone(),
                    uid: org.uid(),
                },
                role: Role::new(ScopeKind::Organization, spec.admin),
                group_created: None,
            })
        }
        (None, Some(group_name)) => {
            let grp = group(group_name)
                .filter(|g| g.meta().deletion_timestamp.is_none())
                .ok_or_else(|| ScopeProblem {
                    reason: Reason::GroupNotFound,
                    message: format!("Group {group_name:?} does not exist"),
                })?;
            let org_name = &grp.spec.organization;
            organization(org_name)
                .filter(|o| o.meta().deletion_timestamp.is_none())
                .ok_or_else(|| ScopeProblem {
                    reason: Reason::GroupOrganizationNotFound,
                    message: format!(
                        "Group {:?} belongs to Organization {org_name:?}, which does not exist",
                        grp.name_any()
                    ),
                })?;
            admit(namespace, &grp.spec.token_namespaces, "Group", group_name)?;
            Ok(ResolvedScope {
                scope: Scope {
                    kind: ScopeKind::Group,
                    name: group_name.clone(),
                    organization: org_name.clone(),
                    uid: grp.uid(),
                },
                role: Role::new(ScopeKind::Group, spec.admin),
                group_created: grp.meta().creation_timestamp.as_ref().map(|t| t.0),
            })
        }
        // The schema refuses both and neither; an object from before the rule existed still
        // must not be issued.
        _ => Err(ScopeProblem {
            reason: Reason::InvalidSpec,
            message: "exactly one of spec.organization or spec.group must be set".into(),
        }),
    }
}

/// Which kill switch stops a token, if any: its group's `spec.suspended`, or its
/// organization's (for a group token, the group's organization). Only meaningful for a scope
/// that resolves; absent objects are `resolve_scope`'s to report.
pub fn suspension(
    spec: &AccessTokenSpec,
    organization: impl Fn(&str) -> Option<std::sync::Arc<Organization>>,
    group: impl Fn(&str) -> Option<std::sync::Arc<Group>>,
) -> Option<ScopeProblem> {
    let suspended = |kind: &str, name: &str| ScopeProblem {
        reason: Reason::ScopeSuspended,
        message: format!(
            "{kind} {name:?} is suspended (spec.suspended: true): its tokens stop working until it is set back to false"
        ),
    };
    let org_name = match (&spec.organization, &spec.group) {
        (Some(org), None) => org.clone(),
        (None, Some(group_name)) => {
            let grp = group(group_name)?;
            if grp.spec.suspended {
                return Some(suspended("Group", group_name));
            }
            grp.spec.organization.clone()
        }
        _ => return None,
    };
    organization(&org_name)
        .filter(|o| o.spec.suspended)
        .map(|_| suspended("Organization", &org_name))
}

fn admit(namespace: &str, allowed: &[String], kind: &str, name: &str) -> Result<(), ScopeProblem> {
    if allowed.iter().any(|n| n == namespace) {
        Ok(())
    } else {
        Err(ScopeProblem {
            reason: Reason::NamespaceNotAllowed,
            message: format!(
                "namespace {namespace:?} is not in spec.tokenNamespaces of {kind} {name:?}"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::{GroupSpec, OrganizationSpec};

    fn org(name: &str, namespaces: &[&str]) -> Arc<Organization> {
        Arc::new(Organization::new(
            name,
            OrganizationSpec {
                display_name: None,
                token_namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        ))
    }

    fn grp(name: &str, organization: &str, namespaces: &[&str]) -> Arc<Group> {
        Arc::new(Group::new(
            name,
            GroupSpec {
                organization: organization.into(),
                display_name: None,
                token_namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        ))
    }

    fn org_token(org: &str, admin: bool) -> AccessTokenSpec {
        AccessTokenSpec {
            organization: Some(org.into()),
            admin,
            ..Default::default()
        }
    }

    fn group_token(group: &str) -> AccessTokenSpec {
        AccessTokenSpec {
            group: Some(group.into()),
            ..Default::default()
        }
    }

    #[test]
    fn organization_token_in_a_listed_namespace_resolves_with_its_role() {
        let orgs = |n: &str| (n == "acme").then(|| org("acme", &["acme-ci"]));
        let resolved = resolve_scope("acme-ci", &org_token("acme", true), orgs, |_| None).unwrap();
        assert_eq!(resolved.role, Role::OrganizationAdmin);
        assert_eq!(
            (resolved.scope.kind, resolved.scope.name.as_str()),
            (ScopeKind::Organization, "acme")
        );
        let user = resolve_scope("acme-ci", &org_token("acme", false), orgs, |_| None).unwrap();
        assert_eq!(user.role, Role::OrganizationUser);
    }

    #[test]
    fn each_scope_problem_has_its_reason() {
        let orgs = |n: &str| (n == "acme").then(|| org("acme", &["acme-ci"]));
        let groups = |n: &str| match n {
            "platform" => Some(grp("platform", "acme", &["acme-platform"])),
            "orphan" => Some(grp("orphan", "gone", &["acme-platform"])),
            _ => None,
        };
        let reason = |ns: &str, spec: AccessTokenSpec| {
            resolve_scope(ns, &spec, orgs, groups).unwrap_err().reason
        };
        assert_eq!(
            reason("acme-ci", org_token("nope", false)),
            Reason::OrganizationNotFound
        );
        assert_eq!(
            reason("other", org_token("acme", false)),
            Reason::NamespaceNotAllowed
        );
        assert_eq!(
            reason("acme-platform", group_token("nope")),
            Reason::GroupNotFound
        );
        assert_eq!(
            reason("acme-platform", group_token("orphan")),
            Reason::GroupOrganizationNotFound
        );
        assert_eq!(
            reason("acme-ci", group_token("platform")),
            Reason::NamespaceNotAllowed
        );
        assert_eq!(
            reason("acme-ci", AccessTokenSpec::default()),
            Reason::InvalidSpec
        );
    }

    #[test]
    fn group_token_resolves_to_its_group_and_organization() {
        let orgs = |n: &str| (n == "acme").then(|| org("acme", &[]));
        let groups =
            |n: &str| (n == "platform").then(|| grp("platform", "acme", &["acme-platform"]));
        let resolved =
            resolve_scope("acme-platform", &group_token("platform"), orgs, groups).unwrap();
        assert_eq!(resolved.role, Role::GroupUser);
        assert_eq!(resolved.scope.organization, "acme");
        assert_eq!(
            (resolved.scope.kind, resolved.scope.name.as_str()),
            (ScopeKind::Group, "platform")
        );
    }

    #[test]
    fn a_suspended_group_stops_its_tokens_and_a_suspended_organization_all_of_them() {
        let org_with = |suspended: bool| {
            let mut o = (*org("acme", &["acme-ci"])).clone();
            o.spec.suspended = suspended;
            Arc::new(o)
        };
        let grp_with = |suspended: bool| {
            let mut g = (*grp("platform", "acme", &["acme-ci"])).clone();
            g.spec.suspended = suspended;
            Arc::new(g)
        };
        let check = |org_suspended: bool, grp_suspended: bool, spec: &AccessTokenSpec| {
            let (o, g) = (org_with(org_suspended), grp_with(grp_suspended));
            suspension(spec, |_| Some(o.clone()), |_| Some(g.clone())).map(|p| p.message)
        };
        let (by_org, by_group) = (org_token("acme", false), group_token("platform"));
        assert_eq!(check(false, false, &by_org), None);
        assert_eq!(check(false, false, &by_group), None);
        assert!(
            check(true, false, &by_org)
                .unwrap()
                .contains("Organization \"acme\"")
        );
        assert!(
            check(true, false, &by_group)
                .unwrap()
                .contains("Organization \"acme\"")
        );
        assert!(
            check(false, true, &by_group)
                .unwrap()
                .contains("Group \"platform\"")
        );
        assert_eq!(
            check(false, true, &by_org),
            None,
            "a group's switch stops only its own"
        );
    }

    #[test]
    fn an_organization_being_deleted_admits_nothing() {
        let mut deleting = (*org("acme", &["acme-ci"])).clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let deleting = Arc::new(deleting);
        let orgs = move |_: &str| Some(deleting.clone());
        let problem =
            resolve_scope("acme-ci", &org_token("acme", false), orgs, |_| None).unwrap_err();
        assert_eq!(problem.reason, Reason::OrganizationNotFound);
    }
}
