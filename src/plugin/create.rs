//! `kubectl atk create`: the seed's "Create Access Token" dialog and its copy-once dialog on
//! the command line. It creates the AccessToken as the user (RBAC and admission decide as
//! for `kubectl apply`), waits until it is Active, and prints the value alone on stdout.

use std::{pin::pin, time::Duration};

use clap::{ArgAction, ArgGroup, Args};
use futures::TryStreamExt as _;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{Timestamp, civil::Date, tz::TimeZone},
};
use kube::{
    Api, Client, ResourceExt as _,
    api::PostParams,
    runtime::{WatchStreamExt as _, watcher},
};

use crate::api::{AccessToken, AccessTokenSpec, Phase};

use super::{FIELD_MANAGER, PluginError, PluginResult, client::parse_duration, exit::Exit, value};

/// What `create` asks for.
#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("scope").required(true).args(["organization", "group"])))]
pub struct CreateArgs {
    /// Name of the AccessToken (and of its Secret, unless --secret-name).
    pub name: String,
    /// Scope the token to this Organization (the namespace must be in its tokenNamespaces).
    #[arg(long, value_name = "ORGANIZATION")]
    pub organization: Option<String>,
    /// Scope the token to this Group (the namespace must be in its tokenNamespaces).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// When the token stops working: RFC 3339 (2027-06-30T12:00:00Z) or a date (2027-06-30,
    /// meaning 00:00 UTC that day). Default: the scope's tokenPolicy.defaultLifetime, else 90d.
    #[arg(long, value_name = "DATE", value_parser = parse_expires, conflicts_with = "lifetime")]
    pub expires: Option<Timestamp>,
    /// How long the token lives from now: a whole number and m, h, d or w (e.g. 30d).
    #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
    pub lifetime: Option<String>,
    /// Give the token the scope's admin role (OrganizationAdmin or GroupAdmin).
    #[arg(long)]
    pub admin: bool,
    /// Free text saying what the token is for.
    #[arg(long, value_name = "TEXT")]
    pub display_name: Option<String>,
    /// Name of the Secret that receives the token (default: NAME).
    #[arg(long, value_name = "NAME")]
    pub secret_name: Option<String>,
    /// Wait until the token is Active and print its value (the default). --wait=false only
    /// creates it; `kubectl atk reveal NAME` prints the value later.
    #[arg(
        long,
        value_name = "BOOL",
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true"
    )]
    pub wait: bool,
    /// How long to wait for Active (e.g. 30s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl CreateArgs {
    /// The AccessToken these flags describe, in `namespace`.
    pub fn manifest(&self, namespace: &str) -> AccessToken {
        let mut token = AccessToken::new(
            &self.name,
            AccessTokenSpec {
                organization: self.organization.clone(),
                group: self.group.clone(),
                display_name: self.display_name.clone(),
                expires_at: self.expires.map(Time),
                lifetime: self.lifetime.clone(),
                admin: self.admin,
                secret_name: self.secret_name.clone(),
                ..Default::default()
            },
        );
        token.metadata.namespace = Some(namespace.to_string());
        token
    }
}

/// Creates the token; with `--wait`, waits for Active and prints the value, alone, on stdout.
pub async fn run(client: &Client, namespace: &str, args: &CreateArgs) -> PluginResult {
    let api: Api<AccessToken> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    let created = api.create(&params, &args.manifest(namespace)).await?;
    let name = created.name_any();
    eprintln!("accesstoken {namespace}/{name} created");
    if !args.wait {
        eprintln!(
            "the value will be in its Secret once Active: `kubectl atk reveal {name} -n {namespace}`"
        );
        return Ok(Exit::Ok);
    }
    eprintln!(
        "waiting up to {}s for it to become Active...",
        args.timeout.as_secs()
    );
    let active = match tokio::time::timeout(args.timeout, until_issued(&api, &name)).await {
        Ok(outcome) => outcome?,
        Err(_) => {
            return Err(PluginError::Unavailable(format!(
                "{namespace}/{name} is not Active after {}s; it was created and stays: \
                 `kubectl atk status {name} -n {namespace}` tells why, \
                 `kubectl atk reveal {name} -n {namespace}` prints the value once it is Active",
                args.timeout.as_secs()
            )));
        }
    };
    let token = value::read(client, &active).await?;
    print_once(token.expose_secret())?;
    eprintln!(
        "This is the only time the value is shown by create; store it now (it is also in \
         Secret {namespace}/{}).",
        args.secret_name.as_deref().unwrap_or(&name)
    );
    Ok(Exit::Ok)
}

/// Prints the value, alone, on stdout.
fn print_once(value: &str) -> PluginResult<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{value}")
        .and_then(|()| stdout.flush())
        .map_err(|e| PluginError::Unavailable(format!("writing to stdout: {e}")))
}

/// Where a freshly created token stands.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// Active, with a token id and a Secret, for the current generation.
    Issued,
    /// Will not become Active without a change: the Ready condition's reason and message.
    Stuck(String),
    /// Not yet: what to tell the user (the reason), if anything.
    Waiting(Option<String>),
}

fn progress(token: &AccessToken) -> Progress {
    let status = token.status.clone().unwrap_or_default();
    let current = status.observed_generation.is_some()
        && status.observed_generation == token.metadata.generation;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let said = ready.map(|c| format!("{}: {}", c.reason, c.message));
    match status.phase {
        Some(Phase::Active)
            if current && status.token_id.is_some() && status.secret_name.is_some() =>
        {
            Progress::Issued
        }
        Some(Phase::Failed | Phase::Revoked | Phase::Expired | Phase::Suspended) if current => {
            let phase = crate::observability::token_series::phase_name(status.phase);
            Progress::Stuck(format!("{phase} ({})", said.unwrap_or_default()))
        }
        _ => Progress::Waiting(said),
    }
}

/// Follows the token until it is issued or stuck.
async fn until_issued(api: &Api<AccessToken>, name: &str) -> PluginResult<AccessToken> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut updates = pin!(watcher(api.clone(), config).applied_objects());
    let mut last_said = None;
    while let Some(token) = updates.try_next().await.map_err(PluginError::from_watch)? {
        match progress(&token) {
            Progress::Issued => return Ok(token),
            Progress::Stuck(why) => {
                return Err(PluginError::Refused(format!(
                    "{}/{name} will not become Active: {why}; it was created and stays \
                     (fix the cause, or `kubectl delete accesstoken {name}`)",
                    token.namespace().unwrap_or_default()
                )));
            }
            Progress::Waiting(said) => {
                if said.is_some() && said != last_said {
                    eprintln!("  {}", said.as_deref().unwrap_or_default());
                    last_said = said;
                }
            }
        }
    }
    Err(PluginError::Unavailable(format!(
        "the watch on {name} ended"
    )))
}

/// `--expires`: RFC 3339, or a date meaning 00:00 UTC that day; not in the past.
fn parse_expires(text: &str) -> Result<Timestamp, String> {
    let at = match text.parse::<Timestamp>() {
        Ok(at) => at,
        Err(_) => text
            .parse::<Date>()
            .and_then(|date| date.to_zoned(TimeZone::UTC))
            .map(|zoned| zoned.timestamp())
            .map_err(|_| {
                format!("{text:?}: expected RFC 3339 (2027-06-30T12:00:00Z) or a date (2027-06-30)")
            })?,
    };
    if at <= Timestamp::now() {
        return Err(format!("{text:?} is in the past"));
    }
    Ok(at)
}

/// `--lifetime`: what spec.lifetime accepts (the CRD allows at most six digits).
fn parse_lifetime(text: &str) -> Result<String, String> {
    crate::domain::expiry::parse_lifetime(text).map_err(|e| e.to_string())?;
    if text.len() > 7 {
        return Err(format!("lifetime {text:?} is too long: at most six digits"));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser, Debug)]
    struct Harness {
        #[command(flatten)]
        create: CreateArgs,
    }

    fn parse(args: &[&str]) -> Result<CreateArgs, clap::Error> {
        Harness::try_parse_from(std::iter::once("create").chain(args.iter().copied()))
            .map(|h| h.create)
    }

    #[test]
    fn flags_become_the_spec() {
        let args = parse(&[
            "ci",
            "--group",
            "platform",
            "--lifetime",
            "30d",
            "--admin",
            "--display-name",
            "CI",
            "--secret-name",
            "ci-token",
        ])
        .expect("parses");
        let token = args.manifest("acme-ci");
        assert_eq!(token.metadata.namespace.as_deref(), Some("acme-ci"));
        let spec = serde_json::to_value(&token.spec).expect("json");
        assert_eq!(
            spec,
            serde_json::json!({"group": "platform", "lifetime": "30d", "admin": true,
                "displayName": "CI", "secretName": "ci-token", "revoked": false})
        );
        assert!(args.wait, "waits by default");

        let dated =
            parse(&["ci", "--organization", "acme", "--expires", "2999-06-30"]).expect("parses");
        assert_eq!(
            dated.manifest("x").spec.expires_at.map(|t| t.0.to_string()),
            Some("2999-06-30T00:00:00Z".to_string())
        );
        let exact = parse(&[
            "ci",
            "--organization",
            "acme",
            "--expires",
            "2999-06-30T12:00:00Z",
        ])
        .expect("parses");
        assert_eq!(
            exact.expires.map(|t| t.to_string()).as_deref(),
            Some("2999-06-30T12:00:00Z")
        );
    }

    #[test]
    fn wait_reads_like_kubectls_bool_flags() {
        let base = ["ci", "--organization", "acme"];
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        assert!(with(&["--wait"]).expect("parses").wait);
        assert!(!with(&["--wait=false"]).expect("parses").wait);
        // `--wait NAME` must not eat the name.
        let before = parse(&["--wait", "ci", "--organization", "acme"]).expect("parses");
        assert!(before.wait && before.name == "ci");
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for bad in [
            &["ci"][..],
            &["ci", "--organization", "a", "--group", "g"],
            &[
                "ci",
                "--organization",
                "a",
                "--lifetime",
                "30d",
                "--expires",
                "2999-01-01",
            ],
            &["ci", "--organization", "a", "--lifetime", "30s"],
            &["ci", "--organization", "a", "--lifetime", "0d"],
            &["ci", "--organization", "a", "--lifetime", "1234567d"],
            &["ci", "--organization", "a", "--expires", "2000-01-01"],
            &["ci", "--organization", "a", "--expires", "next week"],
            &["ci", "--organization", "a", "--timeout", "soon"],
        ] {
            let error = parse(bad).expect_err(&format!("{bad:?} accepted"));
            assert_eq!(error.exit_code(), Exit::Usage as i32, "{bad:?}");
        }
    }

    fn token(status: serde_json::Value, generation: i64) -> AccessToken {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
            "metadata": {"name": "ci", "namespace": "acme", "generation": generation},
            "spec": {"organization": "acme"}, "status": status,
        }))
        .expect("valid")
    }

    #[test]
    fn progress_waits_for_an_issued_current_token() {
        let ready = |reason: &str| {
            serde_json::json!([{"type": "Ready", "status": "False", "reason": reason,
                "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
        };
        assert_eq!(
            progress(&token(serde_json::json!({}), 1)),
            Progress::Waiting(None)
        );
        let waiting = token(
            serde_json::json!({"phase": "Pending", "observedGeneration": 1,
                "conditions": ready("OrganizationNotFound")}),
            1,
        );
        assert_eq!(
            progress(&waiting),
            Progress::Waiting(Some("OrganizationNotFound: m".into()))
        );
        let active = serde_json::json!({"phase": "Active", "observedGeneration": 1,
            "tokenId": "3kx9q0a7m2zb", "secretName": "ci"});
        assert_eq!(progress(&token(active.clone(), 1)), Progress::Issued);
        // Active for an older generation is not an answer yet.
        assert_eq!(progress(&token(active, 2)), Progress::Waiting(None));
        let failed = token(
            serde_json::json!({"phase": "Failed", "observedGeneration": 1,
                "conditions": ready("PolicyViolation")}),
            1,
        );
        assert!(
            matches!(progress(&failed), Progress::Stuck(why) if why.contains("PolicyViolation"))
        );
    }
}
