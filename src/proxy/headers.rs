//! Pure header work of the proxy: which credential a client presented, whether it tried to
//! impersonate, the impersonation headers of a token's identity, and what of a request or
//! response crosses the proxy.

use std::net::IpAddr;

use axum::http::{
    HeaderMap, HeaderName, HeaderValue,
    header::{self, InvalidHeaderValue},
};

use super::Refusal;
use crate::verifier::Identity;

/// Extra key under which the proxy tells kube-apiserver the client's address (shown in the
/// audit log's `impersonatedUser.extra`).
pub const CLIENT_IP_EXTRA: &str = "iam.accesstoken.io/client-ip";

const IMPERSONATE_PREFIX: &str = "impersonate-";
const IMPERSONATE_USER: &str = "impersonate-user";
const IMPERSONATE_UID: &str = "impersonate-uid";
const IMPERSONATE_GROUP: &str = "impersonate-group";
const IMPERSONATE_EXTRA: &str = "impersonate-extra-";

/// Headers that belong to one hop (RFC 9110 §7.6.1), never forwarded as they are.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The access token a request presents, or why it presents none the proxy accepts.
pub fn presented_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Refusal::NoToken);
    };
    if values.next().is_some() {
        return Err(Refusal::NotAnAccessToken);
    }
    let value = value.to_str().map_err(|_| Refusal::NotAnAccessToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(Refusal::NotAnAccessToken)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || !token.starts_with("atk_") {
        return Err(Refusal::NotAnAccessToken);
    }
    Ok(token)
}

/// Whether the client asks to impersonate anyone (`kubectl --as`, `--as-group`, `--as-uid`).
pub fn asks_to_impersonate(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| name.as_str().starts_with(IMPERSONATE_PREFIX))
}

/// Whether the request asks for a protocol upgrade (WebSocket or SPDY: exec, attach,
/// port-forward). Only HTTP/1.1 requests can.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The impersonation headers that make kube-apiserver treat a request as `identity`'s,
/// with the client's address as an extra.
pub fn impersonation(
    identity: &Identity,
    client: Option<IpAddr>,
) -> Result<HeaderMap, InvalidHeaderValue> {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static(IMPERSONATE_USER),
        HeaderValue::from_str(&identity.username)?,
    );
    headers.insert(
        HeaderName::from_static(IMPERSONATE_UID),
        HeaderValue::from_str(&identity.uid)?,
    );
    for group in &identity.groups {
        headers.append(
            HeaderName::from_static(IMPERSONATE_GROUP),
            HeaderValue::from_str(group)?,
        );
    }
    let client = client.map(|ip| (CLIENT_IP_EXTRA.to_string(), vec![ip.to_string()]));
    for (key, values) in identity
        .extra
        .iter()
        .chain(client.as_ref().map(|(k, v)| (k, v)))
    {
        let name = HeaderName::try_from(format!("{IMPERSONATE_EXTRA}{}", escape_extra_key(key)))
            .expect("an escaped key is a valid header name");
        for value in values {
            headers.append(name.clone(), HeaderValue::from_str(value)?);
        }
    }
    Ok(headers)
}

/// An extra key as a header name suffix, as client-go writes it: bytes that are not legal
/// in a header name, and `%` itself, percent-encoded (kube-apiserver lowercases and
/// unescapes it).
pub fn escape_extra_key(key: &str) -> String {
    let mut escaped = String::with_capacity(key.len());
    for byte in key.bytes() {
        if is_token_byte(byte) && byte != b'%' {
            escaped.push(char::from(byte).to_ascii_lowercase());
        } else {
            escaped.push_str(&format!("%{byte:02x}"));
        }
    }
    escaped
}

/// RFC 9110 `tchar`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// The headers a request carries to kube-apiserver: the client's, less its credential, its
/// `Host`, anything hop-by-hop or impersonating, plus the impersonation of the token's
/// identity. An upgrade keeps its `Connection: Upgrade` and `Upgrade` headers.
pub fn upstream_request_headers(
    client: &HeaderMap,
    impersonation: HeaderMap,
    upgrade: bool,
) -> HeaderMap {
    let mut headers = end_to_end(client);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    let impersonating: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(IMPERSONATE_PREFIX))
        .cloned()
        .collect();
    for name in impersonating {
        headers.remove(name);
    }
    if upgrade {
        if let Some(protocol) = client.get(header::UPGRADE) {
            headers.insert(header::UPGRADE, protocol.clone());
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    }
    for (name, value) in impersonation.iter() {
        headers.append(name.clone(), value.clone());
    }
    headers
}

/// The headers of a response as the client gets them: nothing hop-by-hop, except on a
/// `101 Switching Protocols`, which must keep `Connection` and `Upgrade`.
pub fn client_response_headers(upstream: &HeaderMap, switching: bool) -> HeaderMap {
    if switching {
        return upstream.clone();
    }
    end_to_end(upstream)
}

/// `headers` without the hop-by-hop ones, including any that `Connection` names.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .collect();
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        let hop = HOP_BY_HOP.contains(name)
            || name == header::UPGRADE
            || named.iter().any(|token| token == name.as_str());
        if !hop {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn identity() -> Identity {
        Identity {
            username: "accesstoken:acme-ci:deployer".into(),
            uid: "3f1c".into(),
            groups: vec![
                "accesstoken:org:acme".into(),
                "accesstoken:org:acme:user".into(),
            ],
            extra: BTreeMap::from([
                (
                    "iam.accesstoken.io/organization".into(),
                    vec!["acme".into()],
                ),
                ("iam.accesstoken.io/token-id".into(), vec!["abc123".into()]),
            ]),
            namespace: "acme-ci".into(),
            name: "deployer".into(),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::try_from(*name).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn extra_keys_are_escaped_as_client_go_does() {
        assert_eq!(
            escape_extra_key("iam.accesstoken.io/client-ip"),
            "iam.accesstoken.io%2fclient-ip"
        );
        assert_eq!(escape_extra_key("a%b c"), "a%25b%20c");
        assert_eq!(escape_extra_key("Scopes"), "scopes");
    }

    #[test]
    fn the_identity_becomes_one_header_per_group_and_extra_value() {
        let ip = "10.1.2.3".parse().unwrap();
        let headers = impersonation(&identity(), Some(ip)).unwrap();
        assert_eq!(headers["impersonate-user"], "accesstoken:acme-ci:deployer");
        assert_eq!(headers["impersonate-uid"], "3f1c");
        let groups: Vec<_> = headers.get_all("impersonate-group").iter().collect();
        assert_eq!(
            groups,
            ["accesstoken:org:acme", "accesstoken:org:acme:user"]
        );
        assert_eq!(
            headers["impersonate-extra-iam.accesstoken.io%2forganization"],
            "acme"
        );
        assert_eq!(
            headers["impersonate-extra-iam.accesstoken.io%2fclient-ip"],
            "10.1.2.3"
        );
    }

    #[test]
    fn only_a_single_bearer_access_token_is_accepted() {
        let token = "atk_abc";
        let ok = headers(&[("authorization", &format!("Bearer {token}"))]);
        assert_eq!(presented_token(&ok), Ok(token));
        assert_eq!(presented_token(&HeaderMap::new()), Err(Refusal::NoToken));
        for refused in [
            "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig",
            "Basic YWRtaW46YWRtaW4=",
            "atk_abc",
        ] {
            let map = headers(&[("authorization", refused)]);
            assert_eq!(
                presented_token(&map),
                Err(Refusal::NotAnAccessToken),
                "{refused}"
            );
        }
        let twice = headers(&[
            ("authorization", "Bearer atk_a"),
            ("authorization", "Bearer atk_b"),
        ]);
        assert_eq!(presented_token(&twice), Err(Refusal::NotAnAccessToken));
    }

    #[test]
    fn the_credential_and_forged_impersonation_never_go_upstream() {
        let client = headers(&[
            ("authorization", "Bearer atk_secret"),
            ("host", "proxy.example"),
            ("impersonate-user", "system:admin"),
            ("impersonate-group", "system:masters"),
            ("accept", "application/json"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("te", "trailers"),
        ]);
        assert!(asks_to_impersonate(&client));
        let ours = impersonation(&identity(), None).unwrap();
        let sent = upstream_request_headers(&client, ours, false);
        assert!(sent.get("authorization").is_none());
        assert!(sent.get("host").is_none());
        assert!(sent.get("x-hop").is_none() && sent.get("te").is_none());
        assert_eq!(sent["accept"], "application/json");
        assert_eq!(sent["impersonate-user"], "accesstoken:acme-ci:deployer");
        let groups: Vec<_> = sent.get_all("impersonate-group").iter().collect();
        assert!(!groups.iter().any(|g| *g == "system:masters"));
    }

    #[test]
    fn upgrades_keep_their_protocol_headers() {
        let client = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ]);
        assert!(is_upgrade(&client));
        assert!(!is_upgrade(&headers(&[("connection", "keep-alive")])));
        let sent = upstream_request_headers(&client, HeaderMap::new(), true);
        assert_eq!(sent["upgrade"], "SPDY/3.1");
        assert_eq!(sent["connection"], "Upgrade");
        assert_eq!(sent["x-stream-protocol-version"], "v4.channel.k8s.io");
        let plain = client_response_headers(&client, false);
        assert!(plain.get("upgrade").is_none() && plain.get("connection").is_none());
    }
}
