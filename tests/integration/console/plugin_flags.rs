//! `kubectl atk` takes kubectl's connection flags and honours the kubeconfig as kubectl does
//! (`--kubeconfig`, `--context`, `-n`, `--as`, `--as-group`, the kubeconfig's own `as:`), its
//! exit codes tell "not valid" from "could not check" from usage errors from refusals, and
//! its completion works from kubectl's own `kubectl atk <TAB>`.

use std::path::PathBuf;

use kube::config::{Kubeconfig, NamedContext};

use crate::{
    console::plugin::{kubectl_atk, kubectl_atk_with, kubectl_with_plugin, ok},
    support::{
        LoopbackVerifier, Operator, Tenant, editor, eventually, free_port, grant_scope_admin,
        operator_kubeconfig, test_logs_dir, text, unique_name,
    },
};

/// The admin kubeconfig of the local control plane, changed by `edit`, written to a file.
fn admin_kubeconfig_with(name: &str, edit: impl FnOnce(&mut Kubeconfig)) -> PathBuf {
    let admin = std::env::var("KUBECONFIG").expect("KUBECONFIG is set by the launcher");
    let mut kubeconfig = Kubeconfig::read_from(admin).expect("KUBECONFIG is readable");
    edit(&mut kubeconfig);
    let path = test_logs_dir().join(format!("{}.kubeconfig", unique_name(name)));
    std::fs::write(
        &path,
        serde_saphyr::to_string(&kubeconfig).expect("serializes"),
    )
    .expect("written");
    path
}

/// A server address where nothing listens.
fn nowhere() -> String {
    format!("https://127.0.0.1:{}", free_port())
}

#[track_caller]
fn assert_exit(output: &std::process::Output, code: i32, needle: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} missing: {stderr}");
}

#[tokio::test]
async fn exit_codes_tell_the_outcomes_apart() {
    let tenant = Tenant::new("atk-exit").await;
    let ns = tenant.namespace.as_str();

    // 2: the command line is wrong.
    assert_exit(
        &kubectl_atk(&["create", "x", "-n", ns], None).await,
        2,
        "--organization",
    );
    assert_exit(
        &kubectl_atk(&["status", "--bogus"], None).await,
        2,
        "--bogus",
    );
    let cleartext = kubectl_atk(&["whoami", "--verifier", "http://10.0.0.1:8080"], Some("x")).await;
    assert_exit(&cleartext, 2, "https");

    // 4: the API server says no.
    assert_exit(
        &kubectl_atk(&["status", "absent", "-n", ns], None).await,
        4,
        "NotFound",
    );
    assert_exit(
        &kubectl_atk(&["reveal", "absent", "-n", ns], None).await,
        4,
        "NotFound",
    );

    // 3: nothing to ask (no API server, no verifier).
    let dead = admin_kubeconfig_with("dead-server", |k| {
        for cluster in k.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
            cluster.server = Some(nowhere());
        }
    });
    let unreachable = kubectl_atk_with(&["status", "-n", ns], None, Some(&dead)).await;
    assert_exit(&unreachable, 3, "could not reach the API server");
    let url = format!("http://127.0.0.1:{}", free_port());
    let silent = kubectl_atk(&["whoami", "--verifier", &url], Some("atk_x")).await;
    assert_exit(&silent, 3, "verifier");

    // 1: asked, and the token is not valid.
    let _operator = Operator::start(ns).await;
    let verifier =
        LoopbackVerifier::start(&format!("{ns}-atk-exit"), &operator_kubeconfig().await, &[]);
    let url = verifier.url();
    let forged = "atk_forged";
    let denied = eventually("the verifier to answer", || async {
        let output = kubectl_atk(&["whoami", "--verifier", &url], Some(forged)).await;
        (output.status.code() != Some(3)).then_some(output)
    })
    .await;
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied.stderr));
    assert!(text(&denied.stdout).contains("authenticated: false"));
}

#[tokio::test]
async fn kubectl_flags_choose_cluster_namespace_and_identity() {
    let tenant = Tenant::new("atk-kube").await;
    let ns = tenant.namespace.as_str();
    tenant
        .create_token(
            "seen",
            serde_json::json!({"organization": tenant.organization}),
        )
        .await;
    let listed = |stdout: &str| stdout.lines().any(|l| l.starts_with("seen "));

    // --kubeconfig wins over $KUBECONFIG; --context picks a context that is not current,
    // and that context's namespace is the default namespace.
    let two_contexts = admin_kubeconfig_with("two-contexts", |k| {
        let good = k.contexts[0].clone();
        let mut dead_cluster = k.clusters[0].clone();
        dead_cluster.name = "dead".into();
        if let Some(cluster) = dead_cluster.cluster.as_mut() {
            cluster.server = Some(nowhere());
        }
        let mut dead = good.clone();
        dead.name = "dead".into();
        if let Some(context) = dead.context.as_mut() {
            context.cluster = "dead".into();
        }
        let mut tenant_context: NamedContext = good;
        tenant_context.name = "tenant".into();
        if let Some(context) = tenant_context.context.as_mut() {
            context.namespace = Some(ns.to_string());
        }
        k.clusters.push(dead_cluster);
        k.contexts.extend([dead, tenant_context]);
        k.current_context = Some("dead".into());
    });
    let kubeconfig = two_contexts.to_str().expect("utf-8");
    let picked = kubectl_with_plugin(&[
        "atk",
        "--kubeconfig",
        kubeconfig,
        "--context",
        "tenant",
        "status",
    ])
    .env("KUBECONFIG", "/nonexistent/kubeconfig")
    .run()
    .await;
    assert!(picked.status.success(), "{}", text(&picked.stderr));
    assert!(listed(&text(&picked.stdout)), "{}", text(&picked.stdout));
    let current = kubectl_with_plugin(&["atk", "--kubeconfig", kubeconfig, "status"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .run()
        .await;
    assert_exit(&current, 3, "could not reach the API server");

    // --as: a user without rights is refused by the API server, and --as-group is sent too.
    let nobody = unique_name("nobody");
    let refused = kubectl_atk(&["--as", &nobody, "status", "-n", ns], None).await;
    assert_exit(&refused, 4, &nobody);
    ok(&[
        "--as",
        &nobody,
        "--as-group",
        "system:masters",
        "status",
        "-n",
        ns,
    ])
    .await;

    // The kubeconfig's own `as:` is honoured, and --as replaces it.
    let acting = admin_kubeconfig_with("acting-as", |k| {
        for user in k.auth_infos.iter_mut().filter_map(|u| u.auth_info.as_mut()) {
            user.impersonate = Some(nobody.clone());
        }
    });
    let as_nobody = kubectl_atk_with(&["status", "-n", ns], None, Some(&acting)).await;
    assert_exit(&as_nobody, 4, &nobody);
    let as_master = kubectl_atk_with(
        &["status", "-n", ns, "--as-group", "system:masters"],
        None,
        Some(&acting),
    )
    .await;
    assert!(as_master.status.success(), "{}", text(&as_master.stderr));
}

#[tokio::test]
async fn create_acts_as_the_impersonated_scope_admin() {
    let tenant = Tenant::new("atk-as").await;
    let ns = tenant.namespace.as_str();
    let (user, _) = editor(&tenant, "atk-editor").await;
    let create = |name: &'static str, group: String| {
        let user = user.clone();
        async move {
            kubectl_atk(
                &[
                    "--as",
                    &user,
                    "-n",
                    ns,
                    "create",
                    name,
                    "--group",
                    &group,
                    "--wait=false",
                ],
                None,
            )
            .await
        }
    };

    // An editor of the namespace without the group's admin right: admission refuses.
    let refused = create("early", tenant.group.clone()).await;
    assert_exit(&refused, 4, r#"needs verb "admin""#);
    assert!(
        tenant
            .tokens()
            .get_opt("early")
            .await
            .expect("reads")
            .is_none()
    );

    grant_scope_admin(&user, "groups", &tenant.group).await;
    let made = eventually("the admin right to apply", || async {
        let output = create("later", tenant.group.clone()).await;
        output.status.success().then_some(output)
    })
    .await;
    assert!(made.stdout.is_empty());
    let stored = tenant.tokens().get("later").await.expect("created");
    assert_eq!(stored.spec.group.as_deref(), Some(tenant.group.as_str()));
}

#[tokio::test]
async fn completion_scripts_and_kubectls_plugin_completion() {
    let (bash, _) = ok(&["completion", "bash"]).await;
    assert!(
        bash.contains("kubectl-atk") && bash.contains("create"),
        "{bash}"
    );
    let (zsh, _) = ok(&["completion", "zsh"]).await;
    assert!(zsh.starts_with("#compdef kubectl-atk"), "{zsh}");
    let (fish, _) = ok(&["completion", "fish"]).await;
    assert!(fish.contains("complete -c kubectl-atk"), "{fish}");

    // kubectl's own completion of `kubectl atk ...`, through the kubectl_complete-atk shim.
    let complete = |words: &'static [&'static str]| async move {
        let mut args = vec!["__complete", "atk"];
        args.extend_from_slice(words);
        let output = kubectl_with_plugin(&args).run().await;
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    };
    let first: Vec<String> = complete(&["cr"]).await.lines().map(String::from).collect();
    assert!(first.iter().any(|l| l.starts_with("create")), "{first:?}");
    let formats = complete(&["status", "-o", ""]).await;
    assert!(
        formats.contains("json") && formats.contains("yaml"),
        "{formats}"
    );
    let flags = complete(&["create", "--lif"]).await;
    assert!(flags.contains("--lifetime"), "{flags}");
}

#[tokio::test]
async fn krew_and_k9s_files_name_real_commands() {
    use sha2::Digest as _;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = test_logs_dir().join(unique_name("krew"));
    let released = std::process::Command::new(root.join("hack/krew-release.sh"))
        .args([
            "v0.1.0",
            "https://example.org/atk",
            "https://example.org/releases/v0.1.0/",
        ])
        .arg(&out)
        .arg(env!("CARGO_BIN_EXE_access-token-operator"))
        .output()
        .expect("the script runs");
    assert!(released.status.success(), "{}", text(&released.stderr));
    let manifest = std::fs::read_to_string(out.join("atk.yaml")).expect("manifest");
    for placeholder in ["@VERSION@", "@HOMEPAGE@", "@URI_", "@SHA256_"] {
        assert!(
            !manifest.contains(placeholder),
            "{placeholder} is left: {manifest}"
        );
    }
    let manifest: serde_json::Value = serde_saphyr::from_str(&manifest).expect("yaml");
    let platform = &manifest["spec"]["platforms"][0];
    let archive = "kubectl-atk_v0.1.0_linux_amd64.tar.gz";
    assert_eq!(
        platform["uri"],
        format!("https://example.org/releases/v0.1.0/{archive}")
    );
    let bytes = std::fs::read(out.join(archive)).expect("archive");
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(platform["sha256"], sha);
    assert_eq!(platform["bin"], "kubectl-atk");
    let listing = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(out.join(archive))
        .output()
        .expect("tar runs");
    let listing = text(&listing.stdout);
    for file in platform["files"].as_array().expect("files") {
        let from = file["from"].as_str().expect("from");
        assert!(
            listing.contains(from),
            "{from} not in the archive: {listing}"
        );
    }

    // Every k9s plugin runs a real `kubectl atk` subcommand with flags it takes.
    let k9s = std::fs::read_to_string(root.join("plugins/k9s/plugins.yaml")).expect("k9s");
    let k9s: serde_json::Value = serde_saphyr::from_str(&k9s).expect("yaml");
    let plugins = k9s["plugins"].as_object().expect("plugins");
    let mut verbs = Vec::new();
    for (name, plugin) in plugins {
        assert_eq!(plugin["command"], "kubectl", "{name}");
        assert_eq!(
            plugin["scopes"],
            serde_json::json!(["accesstokens"]),
            "{name}"
        );
        let args: Vec<&str> = plugin["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("text"))
            .collect();
        assert_eq!(args[0], "atk", "{name}");
        let (help, _) = ok(&[args[1], "--help"]).await;
        for flag in args.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.contains(flag),
                "{name}: {flag} not taken by `atk {}`",
                args[1]
            );
        }
        verbs.push(args[1]);
    }
    verbs.sort();
    assert_eq!(verbs, ["revoke", "rotate", "unrevoke"]);
}
