//! The controllers: AccessTokens into TechnicalUsers and Secrets, and the status of
//! Organizations and Groups. `run` wires the watches; each reconciler lives in its own module.

mod access_token;
pub mod build;
mod crash_point;
pub mod group_index;
mod scope_status;
pub mod validate;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tracing::{info, warn};

use crate::{
    api::{AccessToken, Group, Organization, Reason, TechnicalUser},
    hasher::Hasher,
    metrics::{ControllerKind, Metrics},
};

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch AccessTokens in this namespace only; `None` watches all namespaces. In
    /// single-namespace mode Organization and Group status is not written, since token
    /// counts need every namespace.
    pub namespace: Option<String>,
    /// Reporting instance for Events (e.g. the pod name).
    pub instance: Option<String>,
    /// Namespace of the group index ConfigMap that the AccessToken admission policy reads
    /// (see `group_index`); `None` writes no index.
    pub group_index_namespace: Option<String>,
}

/// What every reconcile needs.
pub struct Context {
    /// Client for the API server.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// argon2id hashing off the async threads.
    pub hasher: Hasher,
    /// Secrets whose token was verified against its credential, by uid, at this resourceVersion:
    /// avoids re-running argon2 on every reconcile of an unchanged Secret.
    pub verified_secrets: Mutex<HashMap<String, String>>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<AccessToken>, u32>>,
}

impl Context {
    /// Publishes an Event about `object`; failing to publish is logged, never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: Reason,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.as_str().to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            warn!(%error, reason = reason.as_str(), "could not publish Event");
        }
    }
}

/// Runs the controllers until SIGTERM or SIGINT.
pub async fn run(
    client: Client,
    config: Config,
    hasher: Hasher,
    metrics: Arc<Metrics>,
) -> crate::Result<()> {
    let tokens: Api<AccessToken> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (users, secrets): (Api<TechnicalUser>, Api<Secret>) = match &config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let organizations: Api<Organization> = Api::all(client.clone());
    let groups: Api<Group> = Api::all(client.clone());

    // Only Secrets this operator labelled, and only their metadata (`owns` watches metadata):
    // memory does not grow with unrelated Secrets, and no foreign Secret's data is cached.
    let managed = watcher::Config::default().labels(&format!(
        "{}={}",
        build::MANAGED_BY_LABEL,
        build::MANAGER
    ));

    let token_controller = Controller::new(tokens.clone(), watcher::Config::default())
        .owns(users, managed.clone())
        .owns(secrets, managed);
    let token_store = token_controller.store();
    let token_controller = {
        let (by_org, by_group) = (token_store.clone(), token_store.clone());
        token_controller
            .watches(
                organizations.clone(),
                watcher::Config::default(),
                move |org| {
                    // Group tokens too: the organization of their group may be this one. Scope
                    // changes are rare, and a reconcile with nothing to do writes nothing.
                    let name = org.name_any();
                    tokens_where(&by_org, |t| {
                        t.spec.organization.as_deref() == Some(name.as_str())
                            || t.spec.group.is_some()
                    })
                },
            )
            .watches(groups.clone(), watcher::Config::default(), move |group| {
                tokens_where(&by_group, |t| {
                    t.spec.group.as_deref() == Some(&group.name_any())
                })
            })
    };

    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: build::MANAGER.into(),
                instance: config.instance.clone(),
            },
        ),
        client: client.clone(),
        hasher,
        verified_secrets: Mutex::default(),
        failures: Mutex::default(),
    });

    let group_index_task = {
        let (client, namespace) = (client.clone(), config.group_index_namespace.clone());
        async move {
            match namespace {
                Some(namespace) => group_index::run(client, namespace).await,
                None => future::pending().await,
            }
        }
    };
    let token_task = token_controller
        .shutdown_on_signal()
        .run(
            access_token::reconcile,
            access_token::error_policy,
            ctx.clone(),
        )
        .for_each(|result| {
            log_result(&metrics, ControllerKind::AccessToken, result);
            future::ready(())
        });

    if config.namespace.is_some() {
        info!(
            namespace = config.namespace.as_deref(),
            "watching AccessTokens in one namespace"
        );
        // The index task only ends with its watch; the controller ends on a signal.
        future::select(Box::pin(token_task), Box::pin(group_index_task)).await;
        return Ok(());
    }

    let org_controller = Controller::new(organizations.clone(), watcher::Config::default());
    let group_controller = Controller::new(groups.clone(), watcher::Config::default());
    let group_store = group_controller.store();

    let scope_ctx = Arc::new(scope_status::Context {
        client: client.clone(),
    });
    let org_task = {
        let by_token = tokens.clone();
        org_controller
            .watches(
                by_token,
                watcher::Config::default(),
                |token: AccessToken| {
                    token
                        .spec
                        .organization
                        .map(|org| ObjectRef::<Organization>::new(&org))
                },
            )
            .shutdown_on_signal()
            .run(
                scope_status::reconcile_organization,
                scope_status::error_policy,
                scope_ctx.clone(),
            )
            .for_each(|result| {
                log_result(&metrics, ControllerKind::Organization, result);
                future::ready(())
            })
    };
    let group_task = {
        let group_store = group_store.clone();
        group_controller
            .watches(
                tokens.clone(),
                watcher::Config::default(),
                |token: AccessToken| {
                    token
                        .spec
                        .group
                        .map(|group| ObjectRef::<Group>::new(&group))
                },
            )
            .watches(organizations, watcher::Config::default(), move |org| {
                let name = org.name_any();
                group_store
                    .state()
                    .into_iter()
                    .filter(|g| g.spec.organization == name)
                    .map(|g| ObjectRef::from_obj(&*g))
                    .collect::<Vec<_>>()
            })
            .shutdown_on_signal()
            .run(
                scope_status::reconcile_group,
                scope_status::error_policy,
                scope_ctx,
            )
            .for_each(|result| {
                log_result(&metrics, ControllerKind::Group, result);
                future::ready(())
            })
    };
    info!("watching AccessTokens in all namespaces");
    let controllers = future::join3(token_task, org_task, group_task);
    future::select(Box::pin(controllers), Box::pin(group_index_task)).await;
    Ok(())
}

fn tokens_where(
    store: &Store<AccessToken>,
    matches: impl Fn(&AccessToken) -> bool,
) -> Vec<ObjectRef<AccessToken>> {
    store
        .state()
        .into_iter()
        .filter(|t| matches(t))
        .map(|t| ObjectRef::from_obj(&*t))
        .collect()
}

/// Reconcile failures are logged (with backoff state) by the error policies; what reaches
/// here otherwise is a watch or queue problem.
fn log_result<T, Q>(
    metrics: &Metrics,
    controller: ControllerKind,
    result: Result<T, kube::runtime::controller::Error<crate::Error, Q>>,
) where
    T: std::fmt::Debug,
    Q: std::error::Error + 'static,
{
    use kube::runtime::controller::Error as E;
    metrics.reconciled(controller, result.is_ok());
    let kind = format!("{controller:?}");
    let kind = kind.as_str();
    match result {
        Ok(object) => tracing::debug!(kind, ?object, "reconciled"),
        Err(E::ReconcilerFailed(error, object)) => {
            tracing::debug!(kind, %error, ?object, "reconcile failed")
        }
        Err(error) => warn!(kind, %error, "controller error"),
    }
}

/// Exponential backoff for an object's consecutive failures: 1s, 2s, 4s ... capped at 256 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(256));
    }
}
