//! The Argo CD health check (`deploy/argocd/health.lua`) run under a Lua 5.1 interpreter
//! (Argo CD's gopher-lua speaks Lua 5.1), against the status objects recorded in
//! `deploy/argocd/testdata/` (every phase) and against live objects of the local cluster.

use serde::Deserialize;
use serde_json::Value;

const SCRIPT: &str = include_str!("../../../deploy/argocd/health.lua");
const ARGOCD_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/argocd");

/// What the script returned: Argo CD's health status and message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Health {
    pub status: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// Runs the health check on `object` as Argo CD does: the object as the global `obj`.
pub fn health(object: &Value) -> Health {
    use mlua::{LuaSerdeExt as _, serde::SerializeOptions};
    let lua = mlua::Lua::new();
    // JSON null is nil in Argo CD's Lua, as it is here.
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let obj = lua.to_value_with(object, options).expect("object converts");
    lua.globals().set("obj", obj).expect("obj is set");
    let hs: mlua::Value = lua
        .load(SCRIPT)
        .set_name("health.lua")
        .eval()
        .unwrap_or_else(|e| panic!("health.lua fails on {object}: {e}"));
    lua.from_value(hs)
        .expect("health.lua returns {status, message}")
}

#[derive(Deserialize)]
struct Cases {
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    health_status: Health,
    input_path: String,
}

#[test]
fn every_recorded_phase_has_its_health_and_revoked_or_expired_is_not_degraded() {
    let cases: Cases = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{ARGOCD_DIR}/health_test.yaml")).expect("readable"),
    )
    .expect("health_test.yaml parses");
    let mut phases = Vec::new();
    for case in cases.tests {
        let text = std::fs::read_to_string(format!("{ARGOCD_DIR}/{}", case.input_path))
            .unwrap_or_else(|e| panic!("{}: {e}", case.input_path));
        let object: Value = serde_saphyr::from_str(&text).expect("fixture parses");
        let got = health(&object);
        assert_eq!(got.status, case.health_status.status, "{}", case.input_path);
        if let Some(message) = &case.health_status.message {
            assert_eq!(got.message.as_ref(), Some(message), "{}", case.input_path);
        }
        if let Some(phase) = object["status"]["phase"].as_str() {
            phases.push(phase.to_string());
            if matches!(phase, "Revoked" | "Expired" | "Suspended") {
                assert_ne!(got.status, "Degraded", "{}", case.input_path);
            }
        }
    }
    for phase in [
        "Pending",
        "Active",
        "Revoked",
        "Expired",
        "Failed",
        "Suspended",
    ] {
        assert!(
            phases.iter().any(|p| p == phase),
            "no fixture of phase {phase}"
        );
    }
}

#[test]
fn a_token_without_status_or_with_an_old_generation_is_progressing() {
    let fresh = serde_json::json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
        "metadata": {"name": "t", "namespace": "n", "generation": 1},
        "spec": {"organization": "o"},
    });
    assert_eq!(health(&fresh).status, "Progressing");
    let mut stale = fresh.clone();
    stale["metadata"]["generation"] = 2.into();
    stale["status"] = serde_json::json!({"phase": "Active", "observedGeneration": 1});
    assert_eq!(health(&stale).status, "Progressing");
}
