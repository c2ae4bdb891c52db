//! A token's value, read from its Secret only once the Secret proves to be that token's own:
//! the status names a Secret, but someone with write access to Secrets could plant another
//! one under that name, and the plugin must not hand out a token that is not this one.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt as _};

use crate::{
    api::AccessToken,
    api::wellknown::{SECRET_TYPE, keys},
    observability::token_series::phase_name,
    token::Token,
};

use super::{PluginError, PluginResult};

/// The token value of `token` (fetched by the caller), from its Secret, checked.
pub async fn read(client: &Client, token: &AccessToken) -> PluginResult<Token> {
    let (namespace, name) = (token.namespace().unwrap_or_default(), token.name_any());
    let secret_name = issued_secret(token)?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = secrets.get(&secret_name).await?;
    owned_value(token, &secret).map_err(|why| {
        PluginError::Refused(format!(
            "Secret {namespace}/{secret_name} is not the token Secret of AccessToken \
             {namespace}/{name} ({why}); not printing it"
        ))
    })
}

/// The Secret's name once the token is issued.
fn issued_secret(token: &AccessToken) -> PluginResult<String> {
    let status = token.status.clone().unwrap_or_default();
    match (status.secret_name, status.token_id) {
        (Some(secret), Some(_)) => Ok(secret),
        _ => Err(PluginError::Refused(format!(
            "{}/{} has no token yet (phase {}); see `kubectl atk status {}`",
            token.namespace().unwrap_or_default(),
            token.name_any(),
            phase_name(status.phase),
            token.name_any(),
        ))),
    }
}

/// The value, if `secret` is the operator's token Secret of `token` holding its current token.
fn owned_value(token: &AccessToken, secret: &Secret) -> Result<Token, &'static str> {
    if secret.type_.as_deref() != Some(SECRET_TYPE) {
        return Err("wrong type");
    }
    let uid = token.uid();
    let controlled = secret.owner_references().iter().any(|owner| {
        owner.controller == Some(true)
            && owner.kind == "AccessToken"
            && Some(&owner.uid) == uid.as_ref()
    });
    if !controlled {
        return Err("not controlled by the AccessToken");
    }
    let text = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| std::str::from_utf8(&v.0).ok())
            .map(str::to_string)
    };
    let status_id = token.status.as_ref().and_then(|s| s.token_id.clone());
    if text(keys::TOKEN_ID).is_none() || text(keys::TOKEN_ID) != status_id {
        return Err("its token-id is not the status's tokenId (a rotation under way?)");
    }
    let value = text(keys::TOKEN).ok_or("no token key")?;
    let parsed = Token::parse(value.trim()).map_err(|_| "its token is malformed")?;
    if Some(parsed.id().as_str()) != status_id.as_deref() {
        return Err("its token is not the one the status names");
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn issued(token: &Token) -> (AccessToken, Secret) {
        let access_token: AccessToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
            "metadata": {"name": "ci", "namespace": "acme", "uid": "u-1"},
            "spec": {"organization": "acme"},
            "status": {"phase": "Active", "tokenId": token.id().as_str(), "secretName": "ci"}
        }))
        .expect("valid");
        let mut secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ci", "namespace": "acme", "ownerReferences": [{
                "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
                "name": "ci", "uid": "u-1", "controller": true}]},
            "type": SECRET_TYPE,
        }))
        .expect("valid");
        let data = secret.data.get_or_insert_default();
        data.insert(
            keys::TOKEN.into(),
            ByteString(token.expose_secret().as_bytes().to_vec()),
        );
        data.insert(
            keys::TOKEN_ID.into(),
            ByteString(token.id().as_str().as_bytes().to_vec()),
        );
        (access_token, secret)
    }

    #[test]
    fn the_tokens_own_secret_gives_its_value() {
        let token = Token::generate();
        let (access_token, secret) = issued(&token);
        let read = owned_value(&access_token, &secret).expect("its own Secret");
        assert_eq!(read.expose_secret(), token.expose_secret());
    }

    #[test]
    fn a_planted_or_stale_secret_is_refused() {
        let token = Token::generate();
        let (access_token, secret) = issued(&token);

        let mut plain = secret.clone();
        plain.type_ = Some("Opaque".into());
        assert_eq!(owned_value(&access_token, &plain).err(), Some("wrong type"));

        let mut foreign = secret.clone();
        foreign.metadata.owner_references.as_mut().expect("owners")[0].uid = "u-2".into();
        assert!(owned_value(&access_token, &foreign).is_err());
        let mut not_controller = secret.clone();
        not_controller
            .metadata
            .owner_references
            .as_mut()
            .expect("owners")[0]
            .controller = None;
        assert!(owned_value(&access_token, &not_controller).is_err());

        // Another valid token planted under the right labels and owner.
        let other = Token::generate();
        let (_, mut planted) = issued(&other);
        planted.metadata = secret.metadata.clone();
        assert!(owned_value(&access_token, &planted).is_err());
        // The right id key but another token's value.
        let data = planted.data.as_mut().expect("data");
        data.insert(
            keys::TOKEN_ID.into(),
            ByteString(token.id().as_str().as_bytes().to_vec()),
        );
        assert_eq!(
            owned_value(&access_token, &planted).err(),
            Some("its token is not the one the status names")
        );
    }
}
