//! Restart targets of a rotation (docs/concepts/lifecycle.md#restart-targets): the
//! Deployments, StatefulSets and DaemonSets that read the Secret are restarted the way
//! `kubectl rollout restart` does it, once the Secret holds the new token; the previous token
//! goes as soon as all of them have rolled out. Only the pod template annotation
//! [`RESTARTED_AT`] is written; nothing else of a workload is touched.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

use crate::{
    Result,
    api::{Reason, RestartKind, RestartTarget},
    error::{AtStep, Step},
};

/// The pod template annotation `kubectl rollout restart` sets; its value is the rotation time.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Where one target's rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica runs the restarted pod template.
    Complete,
    /// Still rolling out.
    InProgress,
    /// The workload does not exist.
    Missing,
}

fn replicas_done(
    wanted: i32,
    updated: Option<i32>,
    total: Option<i32>,
    available: Option<i32>,
) -> bool {
    updated.unwrap_or(0) == wanted
        && total.unwrap_or(0) == wanted
        && available.unwrap_or(0) == wanted
}

/// A Deployment's rollout, as `kubectl rollout status` judges it: the controller saw the
/// latest generation, and every replica is updated and available with no old one left.
pub fn deployment_rollout(deployment: &Deployment) -> Rollout {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let Some(status) = &deployment.status else {
        return Rollout::InProgress;
    };
    let seen = status.observed_generation.unwrap_or(0) >= generation;
    let done = replicas_done(
        wanted,
        status.updated_replicas,
        status.replicas,
        status.available_replicas,
    );
    if seen && done {
        Rollout::Complete
    } else {
        Rollout::InProgress
    }
}

/// A StatefulSet's rollout: latest generation seen, current revision is the update
/// revision, every replica ready.
pub fn statefulset_rollout(set: &StatefulSet) -> Rollout {
    let generation = set.metadata.generation.unwrap_or(0);
    let wanted = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = &set.status else {
        return Rollout::InProgress;
    };
    let seen = status.observed_generation.unwrap_or(0) >= generation;
    let revised =
        status.update_revision.is_some() && status.current_revision == status.update_revision;
    let ready = status.ready_replicas.unwrap_or(0) == wanted && status.replicas == wanted;
    if seen && revised && ready {
        Rollout::Complete
    } else {
        Rollout::InProgress
    }
}

/// A DaemonSet's rollout: latest generation seen, every scheduled pod updated and available.
pub fn daemonset_rollout(set: &DaemonSet) -> Rollout {
    let generation = set.metadata.generation.unwrap_or(0);
    let Some(status) = &set.status else {
        return Rollout::InProgress;
    };
    let seen = status.observed_generation.unwrap_or(0) >= generation;
    let wanted = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0) == wanted;
    let available = status.number_available.unwrap_or(0) == wanted;
    if seen && updated && available {
        Rollout::Complete
    } else {
        Rollout::InProgress
    }
}

/// What a reconcile does about the restart targets of the token in the Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A token they were not restarted for yet: restart them, then judge their rollouts.
    Restart,
    /// Judge their rollouts again.
    Judge,
    /// Nothing: the verdict for this token is final (all rolled out or stuck, or missing once
    /// the previous token is gone).
    Done,
}

/// The next step for targets last restarted for `restarted_for`, whose TargetsRolledOut
/// condition says `prior`, now that the Secret holds `token_id`; `overlap_over` once no
/// previous credential is left.
pub fn next(
    restarted_for: Option<&str>,
    token_id: &str,
    prior: Option<&str>,
    overlap_over: bool,
) -> Next {
    if restarted_for != Some(token_id) {
        return Next::Restart;
    }
    let final_ = match prior {
        Some("RolloutComplete" | "RolloutStuck") => true,
        Some("RestartTargetMissing") => overlap_over,
        _ => false,
    };
    if final_ { Next::Done } else { Next::Judge }
}

/// The TargetsRolledOut condition and what follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The condition's status.
    pub done: bool,
    /// Its reason (also the Event's).
    pub reason: Reason,
    /// Its message.
    pub message: String,
    /// Whether the previous token may go now (every target rolled out).
    pub drop_previous: bool,
    /// Whether to look again soon (rollouts still running within the overlap).
    pub poll: bool,
}

/// Judges the targets' rollouts; `overlap_over` once no previous credential is left.
pub fn judge(results: &[(RestartTarget, Rollout)], overlap_over: bool) -> Verdict {
    let named = |wanted: Rollout| {
        results
            .iter()
            .filter(|(_, r)| *r == wanted)
            .map(|(t, _)| format!("{:?}/{}", t.kind, t.name))
            .collect::<Vec<_>>()
    };
    let (missing, running) = (named(Rollout::Missing), named(Rollout::InProgress));
    let verdict = |done, reason, message: String, poll| Verdict {
        done,
        reason,
        message,
        drop_previous: done,
        poll,
    };
    if !missing.is_empty() {
        let message = format!(
            "restart target(s) {} do not exist in this namespace; the previous token is removed when the overlap ends",
            missing.join(", ")
        );
        return verdict(false, Reason::RestartTargetMissing, message, false);
    }
    if running.is_empty() {
        let message =
            "every restart target rolled out onto the new token; the previous token was removed"
                .to_string();
        return verdict(true, Reason::RolloutComplete, message, false);
    }
    if overlap_over {
        let message = format!(
            "restart target(s) {} did not finish rolling out before the overlap ended; the previous token was removed",
            running.join(", ")
        );
        return verdict(false, Reason::RolloutStuck, message, false);
    }
    let message = format!(
        "waiting for {} to roll out onto the new token",
        running.join(", ")
    );
    verdict(false, Reason::RolloutInProgress, message, true)
}

/// Restarts every target for the token rotated in at `rotated_at`, stamped with that time in
/// whole seconds, as status and the TechnicalUser store times: the stamp after a crash (read
/// back from there) is the same, so it starts no second rollout.
pub async fn restart_all(
    client: &Client,
    namespace: &str,
    targets: &[RestartTarget],
    rotated_at: k8s_openapi::jiff::Timestamp,
) -> Result<()> {
    let stamp = k8s_openapi::jiff::Timestamp::from_second(rotated_at.as_second())
        .unwrap_or(rotated_at)
        .to_string();
    for target in targets {
        restart(client, namespace, target, &stamp).await?;
    }
    tracing::info!(
        targets = targets.len(),
        "restart targets restarted after a rotation"
    );
    Ok(())
}

/// Restarts `target` with `stamp` as its restart annotation (the same value twice is no
/// second rollout); `false` if it does not exist.
pub async fn restart(
    client: &Client,
    namespace: &str,
    target: &RestartTarget,
    stamp: &str,
) -> Result<bool> {
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}});
    let params = PatchParams::default();
    let name = target.name.as_str();
    let done = match target.kind {
        RestartKind::Deployment => Api::<Deployment>::namespaced(client.clone(), namespace)
            .patch(name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        RestartKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .patch(name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        RestartKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), namespace)
            .patch(name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    };
    match done {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error).at(Step::RestartTarget),
    }
}

/// Where `target`'s rollout is.
pub async fn rollout(client: &Client, namespace: &str, target: &RestartTarget) -> Result<Rollout> {
    let name = target.name.as_str();
    let read = match target.kind {
        RestartKind::Deployment => Api::<Deployment>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map(|d| d.map(|d| deployment_rollout(&d))),
        RestartKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map(|s| s.map(|s| statefulset_rollout(&s))),
        RestartKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map(|d| d.map(|d| daemonset_rollout(&d))),
    };
    Ok(read.at(Step::RestartTarget)?.unwrap_or(Rollout::Missing))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    use super::*;

    #[test]
    fn targets_are_restarted_once_per_token_and_judged_until_the_verdict_is_final() {
        // (restarted for, prior reason, overlap over) → next, for token "new"
        let table = [
            (None, None, false, Next::Restart),
            (Some("old"), Some("RolloutComplete"), false, Next::Restart),
            (Some("new"), None, false, Next::Judge),
            (Some("new"), Some("RolloutInProgress"), false, Next::Judge),
            (Some("new"), Some("RolloutComplete"), false, Next::Done),
            (Some("new"), Some("RolloutStuck"), false, Next::Done),
            (
                Some("new"),
                Some("RestartTargetMissing"),
                false,
                Next::Judge,
            ),
            (Some("new"), Some("RestartTargetMissing"), true, Next::Done),
        ];
        for (restarted_for, prior, overlap_over, expected) in table {
            assert_eq!(
                next(restarted_for, "new", prior, overlap_over),
                expected,
                "{restarted_for:?} {prior:?} {overlap_over}"
            );
        }
    }

    fn deployment(generation: i64, replicas: i32, status: DeploymentStatus) -> Deployment {
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(status),
            ..Default::default()
        };
        d.metadata.generation = Some(generation);
        d
    }

    #[test]
    fn a_deployment_is_rolled_out_once_its_controller_saw_the_restart_and_replaced_every_pod() {
        let seen = |g| DeploymentStatus {
            observed_generation: Some(g),
            ..Default::default()
        };
        assert_eq!(
            deployment_rollout(&deployment(2, 0, seen(2))),
            Rollout::Complete
        );
        assert_eq!(
            deployment_rollout(&deployment(2, 0, seen(1))),
            Rollout::InProgress,
            "restart not seen yet"
        );
        let half = DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(3),
            updated_replicas: Some(2),
            available_replicas: Some(3),
            ..Default::default()
        };
        assert_eq!(
            deployment_rollout(&deployment(2, 2, half)),
            Rollout::InProgress
        );
        let pending = DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(1),
            updated_replicas: Some(1),
            available_replicas: None,
            ..Default::default()
        };
        assert_eq!(
            deployment_rollout(&deployment(2, 1, pending)),
            Rollout::InProgress,
            "pods not available"
        );
    }

    fn target(name: &str) -> RestartTarget {
        RestartTarget {
            kind: RestartKind::Deployment,
            name: name.into(),
        }
    }

    #[test]
    fn a_statefulset_is_rolled_out_once_every_replica_runs_the_update_revision_and_is_ready() {
        use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
        let set = |generation: i64, status: StatefulSetStatus| {
            let mut set = StatefulSet {
                spec: Some(StatefulSetSpec {
                    replicas: Some(2),
                    ..Default::default()
                }),
                status: Some(status),
                ..Default::default()
            };
            set.metadata.generation = Some(generation);
            set
        };
        let done = StatefulSetStatus {
            observed_generation: Some(3),
            current_revision: Some("web-2".into()),
            update_revision: Some("web-2".into()),
            ready_replicas: Some(2),
            replicas: 2,
            ..Default::default()
        };
        assert_eq!(
            statefulset_rollout(&set(3, done.clone())),
            Rollout::Complete
        );
        for (why, generation, status) in [
            ("the restart not seen yet", 4, done.clone()),
            (
                "pods still on the old revision",
                3,
                StatefulSetStatus {
                    current_revision: Some("web-1".into()),
                    ..done.clone()
                },
            ),
            (
                "no update revision reported",
                3,
                StatefulSetStatus {
                    current_revision: None,
                    update_revision: None,
                    ..done.clone()
                },
            ),
            (
                "a replica not ready",
                3,
                StatefulSetStatus {
                    ready_replicas: Some(1),
                    ..done.clone()
                },
            ),
            (
                "an extra replica left",
                3,
                StatefulSetStatus {
                    replicas: 3,
                    ..done.clone()
                },
            ),
        ] {
            assert_eq!(
                statefulset_rollout(&set(generation, status)),
                Rollout::InProgress,
                "{why}"
            );
        }
    }

    #[test]
    fn a_daemonset_is_rolled_out_once_every_scheduled_pod_is_updated_and_available() {
        use k8s_openapi::api::apps::v1::DaemonSetStatus;
        let set = |generation: i64, status: DaemonSetStatus| {
            let mut set = DaemonSet {
                status: Some(status),
                ..Default::default()
            };
            set.metadata.generation = Some(generation);
            set
        };
        let done = DaemonSetStatus {
            observed_generation: Some(5),
            desired_number_scheduled: 3,
            updated_number_scheduled: Some(3),
            number_available: Some(3),
            ..Default::default()
        };
        assert_eq!(daemonset_rollout(&set(5, done.clone())), Rollout::Complete);
        for (why, generation, status) in [
            ("the restart not seen yet", 6, done.clone()),
            (
                "a node still runs the old pod",
                5,
                DaemonSetStatus {
                    updated_number_scheduled: Some(2),
                    ..done.clone()
                },
            ),
            (
                "a pod not available",
                5,
                DaemonSetStatus {
                    number_available: Some(2),
                    ..done.clone()
                },
            ),
        ] {
            assert_eq!(
                daemonset_rollout(&set(generation, status)),
                Rollout::InProgress,
                "{why}"
            );
        }
        assert_eq!(
            daemonset_rollout(&DaemonSet::default()),
            Rollout::InProgress,
            "no status yet"
        );
    }

    #[test]
    fn the_verdict_names_missing_and_stuck_targets_and_drops_the_previous_token_only_when_all_rolled_out()
     {
        let all = judge(
            &[
                (target("a"), Rollout::Complete),
                (target("b"), Rollout::Complete),
            ],
            false,
        );
        assert_eq!(
            (all.done, all.reason, all.drop_previous, all.poll),
            (true, Reason::RolloutComplete, true, false)
        );
        let running = judge(
            &[
                (target("a"), Rollout::Complete),
                (target("b"), Rollout::InProgress),
            ],
            false,
        );
        assert_eq!(
            (running.reason, running.drop_previous, running.poll),
            (Reason::RolloutInProgress, false, true)
        );
        let stuck = judge(&[(target("b"), Rollout::InProgress)], true);
        assert_eq!((stuck.reason, stuck.poll), (Reason::RolloutStuck, false));
        assert!(stuck.message.contains("Deployment/b"), "{}", stuck.message);
        let missing = judge(
            &[
                (target("nope"), Rollout::Missing),
                (target("b"), Rollout::InProgress),
            ],
            false,
        );
        assert_eq!(
            (missing.reason, missing.drop_previous),
            (Reason::RestartTargetMissing, false)
        );
        assert!(
            missing.message.contains("Deployment/nope"),
            "{}",
            missing.message
        );
    }
}
