//! Watched objects as the processes keep them: metadata cut to what they read while it is
//! parsed, so what a tenant pads an object with (labels, annotations, managed fields, owner
//! references, up to the API server's size limit) is skipped by the parser instead of being
//! allocated, and never stays in a cache.
//!
//! Like kube's `DeserializeGuard`, an object whose spec or status does not deserialize
//! arrives as [`Invalid`] (for that object alone, its metadata kept) instead of failing the
//! whole watch; unlike it, the object is not first buffered whole.

use std::{collections::BTreeMap, fmt, marker::PhantomData};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;
use serde::{
    Deserialize, Deserializer,
    de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor},
};
use serde_json::Value;

use super::{AccessToken, TechnicalUser, wellknown};

/// The labels and annotations any process reads on a watched object; all others are dropped.
const KEPT_KEYS: &[&str] = &[
    wellknown::MANAGED_BY_LABEL,
    wellknown::ACCESS_TOKEN_LABEL,
    wellknown::ACCESS_TOKEN_UID_LABEL,
];

/// Objects per page when a process lists a kind tenants write: a relist holds one page's
/// response at a time, so this bounds its transient memory at this many times the API
/// server's object size limit (1.5 MiB in etcd), whatever the objects are padded with.
pub const LIST_PAGE_SIZE: u32 = 16;

/// A watched object with trimmed metadata, or why it could not be read.
#[derive(Debug, Clone)]
pub struct Trimmed<K>(pub Result<K, Invalid>);

/// An object whose spec or status does not deserialize: its (trimmed) metadata and the error.
#[derive(Debug, Clone)]
pub struct Invalid {
    /// The object's trimmed metadata, so it can still be named, keyed and given Events.
    pub metadata: ObjectMeta,
    /// The deserialization error (schema text only: the spec holds no secret).
    pub error: String,
}

/// A kind the processes watch trimmed: how it is put together from its parts.
pub trait Trim: Resource<DynamicType = ()> + Sized {
    /// The object from its trimmed metadata and its `spec` and `status` as sent (both bounded
    /// by the CRD's schema, unlike metadata).
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Value>,
        status: Option<Value>,
    ) -> serde_json::Result<Self>;
}

fn part<T: DeserializeOwned>(value: Option<Value>) -> serde_json::Result<T> {
    serde_json::from_value(value.unwrap_or(Value::Null))
}

fn optional<T: DeserializeOwned>(value: Option<Value>) -> serde_json::Result<Option<T>> {
    value.map(serde_json::from_value).transpose()
}

impl Trim for AccessToken {
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Value>,
        status: Option<Value>,
    ) -> serde_json::Result<Self> {
        Ok(Self {
            metadata,
            spec: part(spec)?,
            status: optional(status)?,
        })
    }
}

impl Trim for TechnicalUser {
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Value>,
        _: Option<Value>,
    ) -> serde_json::Result<Self> {
        Ok(Self {
            metadata,
            spec: part(spec)?,
        })
    }
}

impl<K: Trim> Resource for Trimmed<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(object) => object.meta(),
            Err(invalid) => &invalid.metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(object) => object.meta_mut(),
            Err(invalid) => &mut invalid.metadata,
        }
    }
}

impl<'de, K: Trim> Deserialize<'de> for Trimmed<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(bound = "")]
        struct Parts<K: Trim> {
            metadata: TrimmedMeta<K>,
            #[serde(default)]
            spec: Option<Value>,
            #[serde(default)]
            status: Option<Value>,
        }
        let parts = Parts::<K>::deserialize(deserializer)?;
        let metadata = parts.metadata.0;
        Ok(Self(
            K::assemble(metadata.clone(), parts.spec, parts.status).map_err(|error| Invalid {
                metadata,
                error: error.to_string(),
            }),
        ))
    }
}

/// Object metadata keeping only what the processes read: identity, versions, lifecycle
/// timestamps, finalizers, the controller reference and the known labels.
struct TrimmedMeta<K>(ObjectMeta, PhantomData<K>);

impl<'de, K: Trim> Deserialize<'de> for TrimmedMeta<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Fields {
            name: Option<String>,
            namespace: Option<String>,
            uid: Option<String>,
            resource_version: Option<String>,
            generation: Option<i64>,
            creation_timestamp: Option<Time>,
            deletion_timestamp: Option<Time>,
            #[serde(default)]
            labels: KnownKeys,
            #[serde(default)]
            owner_references: ControllerReference,
            #[serde(default)]
            finalizers: Option<Vec<String>>,
        }
        let fields = Fields::deserialize(deserializer)?;
        Ok(Self(
            ObjectMeta {
                name: fields.name,
                namespace: fields.namespace,
                uid: fields.uid,
                resource_version: fields.resource_version,
                generation: fields.generation,
                creation_timestamp: fields.creation_timestamp,
                deletion_timestamp: fields.deletion_timestamp,
                labels: fields.labels.0,
                owner_references: fields.owner_references.0.map(|owner| vec![owner]),
                // Kept whole: the operator's finalizer helper tests the list as stored.
                finalizers: fields.finalizers,
                ..ObjectMeta::default()
            },
            PhantomData,
        ))
    }
}

/// A string map keeping only [`KEPT_KEYS`]; other entries are skipped unallocated.
#[derive(Default)]
struct KnownKeys(Option<BTreeMap<String, String>>);

impl<'de> Deserialize<'de> for KnownKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = KnownKeys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_unit<E>(self) -> Result<KnownKeys, E> {
                Ok(KnownKeys(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KnownKeys, A::Error> {
                let mut kept = BTreeMap::new();
                while let Some(KnownKey(key)) = map.next_key()? {
                    match key {
                        Some(key) => {
                            kept.insert(key.to_string(), map.next_value()?);
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(KnownKeys(Some(kept)))
            }
        }
        deserializer.deserialize_option(OptionOf(Keys))
    }
}

/// A map key: which of [`KEPT_KEYS`] it is, if any. Compared where it lies in the input, so
/// a skipped key costs no allocation.
struct KnownKey(Option<&'static str>);

impl<'de> Deserialize<'de> for KnownKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = KnownKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E>(self, key: &str) -> Result<KnownKey, E> {
                Ok(KnownKey(
                    KEPT_KEYS.iter().find(|kept| **kept == key).copied(),
                ))
            }
        }
        deserializer.deserialize_str(Key)
    }
}

/// The one owner reference with `controller: true` (the API server allows at most one);
/// the others are skipped.
#[derive(Default)]
struct ControllerReference(Option<OwnerReference>);

impl<'de> Deserialize<'de> for ControllerReference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct References;
        impl<'de> Visitor<'de> for References {
            type Value = ControllerReference;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of owner references")
            }
            fn visit_unit<E>(self) -> Result<ControllerReference, E> {
                Ok(ControllerReference(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ControllerReference, A::Error> {
                let mut controller = None;
                while let Some(owner) = seq.next_element::<OwnerReference>()? {
                    if owner.controller == Some(true) {
                        controller = Some(owner);
                    }
                }
                Ok(ControllerReference(controller))
            }
        }
        deserializer.deserialize_option(OptionOf(References))
    }
}

/// Accepts `null` (as `visit_unit`) or the value `V` visits.
struct OptionOf<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for OptionOf<V> {
    type Value = V::Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        deserializer.deserialize_any(self.0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn padded_token(spec: Value) -> Value {
        let padding: serde_json::Map<String, Value> = (0..500)
            .map(|i| (format!("pad.example/{i}"), json!("x".repeat(60))))
            .collect();
        json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1",
            "kind": "AccessToken",
            "metadata": {
                "name": "ci", "namespace": "team-a", "uid": "u-1", "resourceVersion": "7",
                "generation": 2, "creationTimestamp": "2026-01-01T00:00:00Z",
                "finalizers": ["iam.accesstoken.io/cleanup"],
                "labels": Value::Object({
                    let mut labels = padding.clone();
                    labels.insert(wellknown::MANAGED_BY_LABEL.into(), json!("kept"));
                    labels
                }),
                "annotations": Value::Object(padding),
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:metadata": {}}}],
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "uid": "x"},
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "b", "uid": "y", "controller": true},
                ],
            },
            "spec": spec,
        })
    }

    #[test]
    fn metadata_keeps_what_is_read_and_drops_the_padding() {
        let spec = json!({"organization": "acme"});
        let Trimmed(token) =
            serde_json::from_value::<Trimmed<AccessToken>>(padded_token(spec)).unwrap();
        let token = token.expect("a valid token");
        let meta = &token.metadata;
        assert_eq!(meta.name.as_deref(), Some("ci"));
        assert_eq!(meta.namespace.as_deref(), Some("team-a"));
        assert_eq!(meta.uid.as_deref(), Some("u-1"));
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert_eq!(meta.generation, Some(2));
        assert!(meta.creation_timestamp.is_some());
        assert_eq!(
            meta.finalizers,
            Some(vec!["iam.accesstoken.io/cleanup".to_string()])
        );
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels.len(), 1, "only the known label: {labels:?}");
        assert_eq!(labels[wellknown::MANAGED_BY_LABEL], "kept");
        assert_eq!(meta.annotations, None);
        assert_eq!(meta.managed_fields, None);
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].name, "b", "the controller reference is kept");
        assert_eq!(token.spec.organization.as_deref(), Some("acme"));
    }

    #[test]
    fn an_object_that_does_not_deserialize_is_kept_as_invalid_with_its_name() {
        let spec = json!({"organization": 7});
        let Trimmed(token) =
            serde_json::from_value::<Trimmed<AccessToken>>(padded_token(spec)).unwrap();
        let invalid = token.expect_err("spec.organization is not a string");
        assert_eq!(invalid.metadata.name.as_deref(), Some("ci"));
        assert_eq!(invalid.metadata.labels.as_ref().map(BTreeMap::len), Some(1));
        assert!(invalid.error.contains("invalid type"), "{}", invalid.error);
    }

    #[test]
    fn absent_and_null_metadata_maps_are_accepted() {
        let user = json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "TechnicalUser",
            "metadata": {"name": "ci", "labels": null, "ownerReferences": null},
            "spec": {
                "credentials": [], "role": super::super::Role::OrganizationUser,
                "scope": {"kind": "Organization", "name": "acme", "organization": "acme"},
                "disabled": false, "expiresAt": "2027-01-01T00:00:00Z",
            },
        });
        let Trimmed(user) = serde_json::from_value::<Trimmed<TechnicalUser>>(user).unwrap();
        let user = user.expect("a valid user");
        assert_eq!(user.metadata.labels, None);
        assert_eq!(user.metadata.owner_references, None);
    }

    #[test]
    fn a_list_page_with_one_bad_object_keeps_the_others() {
        let list = json!({
            "apiVersion": "v1", "kind": "List", "metadata": {},
            "items": [
                padded_token(json!({"organization": "acme"})),
                padded_token(json!({"organization": ["acme"]})),
            ],
        });
        let list: kube::core::ObjectList<Trimmed<AccessToken>> =
            serde_json::from_slice(&serde_json::to_vec(&list).unwrap()).unwrap();
        assert!(list.items[0].0.is_ok());
        assert!(list.items[1].0.is_err());
    }
}
