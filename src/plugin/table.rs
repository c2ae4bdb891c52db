//! The table `kubectl atk status` prints: one row per AccessToken, from its status only.

use kube::ResourceExt;

use crate::{api::AccessToken, observability::token_series::phase_name};

/// One row's cells.
fn cells(token: &AccessToken, with_namespace: bool) -> Vec<String> {
    let status = token.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let role = status
        .role
        .and_then(|r| serde_json::to_value(r).ok())
        .and_then(|v| v.as_str().map(str::to_string));
    let mut row = Vec::new();
    if with_namespace {
        row.push(token.namespace().unwrap_or_default());
    }
    row.extend([
        token.name_any(),
        phase_name(status.phase),
        status.scope.unwrap_or_default(),
        role.unwrap_or_default(),
        status
            .expires_at
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        status.token_id.unwrap_or_default(),
        ready.map(|c| c.reason.clone()).unwrap_or_default(),
    ]);
    row.into_iter()
        .map(|c| if c.is_empty() { "-".to_string() } else { c })
        .collect()
}

/// The table, columns aligned, with a header.
pub fn render(tokens: &[AccessToken], with_namespace: bool) -> String {
    let mut header: Vec<String> = Vec::new();
    if with_namespace {
        header.push("NAMESPACE".into());
    }
    header.extend(
        [
            "NAME", "PHASE", "SCOPE", "ROLE", "EXPIRES", "TOKEN-ID", "REASON",
        ]
        .map(String::from),
    );
    let mut rows = vec![header];
    rows.extend(tokens.iter().map(|t| cells(t, with_namespace)));
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_status_and_dashes_for_what_is_missing() {
        let token: AccessToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
            "metadata": {"name": "ci", "namespace": "acme"},
            "spec": {"organization": "acme"},
            "status": {"phase": "Active", "tokenId": "3kx9q0a7m2zb", "scope": "organization/acme",
                       "role": "OrganizationUser", "expiresAt": "2027-06-30T00:00:00Z",
                       "conditions": [{"type": "Ready", "status": "True", "reason": "TokenActive",
                                       "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .expect("valid");
        let pending: AccessToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
            "metadata": {"name": "new", "namespace": "acme"},
            "spec": {"organization": "acme"},
        }))
        .expect("valid");
        let table = render(&[token, pending], true);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE   NAME"), "{table}");
        for cell in [
            "acme",
            "Active",
            "organization/acme",
            "OrganizationUser",
            "2027-06-30T00:00:00Z",
            "3kx9q0a7m2zb",
            "TokenActive",
        ] {
            assert!(lines[1].contains(cell), "{cell} missing: {table}");
        }
        assert!(
            lines[2].contains("Pending") && lines[2].contains(" - "),
            "{table}"
        );
    }
}
