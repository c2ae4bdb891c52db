//! An AccessToken as the verifier keeps it: metadata as [`Trimmed`] cuts it, the spec
//! without its Secret template, and of the status only `rotatedAt` (a rotated token's
//! lifetime counts from it). The status is most of a token's size and no decision reads the
//! rest of it; not holding its type at all (issue 22) saves its fixed size too, about 0.5 KiB
//! a token, where clearing its fields did not.
//!
//! [`Trimmed`]: crate::api::Trimmed

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{AccessToken, AccessTokenSpec, AccessTokenStatus, Trim};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct KeptToken {
    /// Trimmed metadata, without finalizers.
    pub metadata: ObjectMeta,
    /// The spec, without `secretTemplate`.
    pub spec: AccessTokenSpec,
    /// `status.rotatedAt`.
    pub rotated_at: Option<Time>,
}

impl KeptToken {
    /// The AccessToken the checks read (`decide`), with a status that holds `rotatedAt` only.
    pub fn to_access_token(&self) -> AccessToken {
        AccessToken {
            metadata: self.metadata.clone(),
            spec: self.spec.clone(),
            status: self.rotated_at.clone().map(|at| AccessTokenStatus {
                rotated_at: Some(at),
                ..Default::default()
            }),
        }
    }
}

impl From<AccessToken> for KeptToken {
    fn from(token: AccessToken) -> Self {
        Self {
            metadata: ObjectMeta {
                finalizers: None,
                ..token.metadata
            },
            spec: AccessTokenSpec {
                secret_template: None,
                ..token.spec
            },
            rotated_at: token.status.and_then(|s| s.rotated_at),
        }
    }
}

impl Trim for KeptToken {
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Value>,
        status: Option<Value>,
    ) -> serde_json::Result<Self> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Rotated {
            rotated_at: Option<Time>,
        }
        let spec: AccessTokenSpec = serde_json::from_value(spec.unwrap_or(Value::Null))?;
        let rotated = status.map(serde_json::from_value::<Rotated>).transpose()?;
        Ok(Self {
            metadata: ObjectMeta {
                finalizers: None,
                ..metadata
            },
            spec: AccessTokenSpec {
                secret_template: None,
                ..spec
            },
            rotated_at: rotated.and_then(|r| r.rotated_at),
        })
    }
}

impl Resource for KeptToken {
    type DynamicType = ();
    type Scope = <AccessToken as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        AccessToken::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        AccessToken::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        AccessToken::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        AccessToken::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
