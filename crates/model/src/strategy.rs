//! What a kind does on the server, behind one trait: Kubernetes calls it a registry strategy
//! (`PrepareForCreate`, `Validate`, `PrepareForUpdate`, `ValidateUpdate`, table conversion,
//! selectable fields).
//!
//! [`Strategy`] is the object-safe face the registry, the API server and discovery use; every
//! served kind is one `&'static dyn Strategy` in [`crate::kinds::KINDS`]. Built-in kinds are
//! typed by k8s-openapi and implement [`Kind`], which gives them [`Strategy`] through a blanket
//! impl: a kind states only what differs from the defaults. Kinds registered at run time
//! (CustomResourceDefinitions) implement [`Strategy`] directly, driven by their schema.

use std::time::SystemTime;

use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::decode::{self, NormalizeOutcome, Rejected};
use crate::field::FieldError;
use crate::fields;
use crate::resource::ResourceType;
use crate::table::{self, Column};
use crate::validation::{self, NameRule};

/// What the registry must allocate for an object of a kind, and release when it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Nothing.
    None,
    /// A Service's ClusterIP and NodePorts.
    ServiceAddresses,
}

/// The server-side behaviour of one served kind. Object-safe: the registry holds
/// `&'static dyn Strategy`.
pub trait Strategy: Send + Sync + 'static {
    /// How the kind is served: group, version, names, scope, subresources.
    fn resource(&self) -> &'static ResourceType;

    /// Decodes, defaults and validates an object written to this kind; `old` is the stored
    /// object on update (`None` on create). With `strict`, unknown fields are a `BadRequest`;
    /// without, they are dropped and reported as warnings (see [`decode::decode_written`]).
    fn normalize(&self, object: Value, old: Option<&Value>, strict: bool) -> Result<NormalizeOutcome, Rejected>;

    /// The object read back as its typed value and encoded again, unknown fields dropped:
    /// whether stored bytes still decode as this kind.
    fn roundtrip(&self, object: &Value) -> Result<Value, Rejected>;

    /// The `columnDefinitions` of a Table of this kind, wide columns included.
    fn columns(&self) -> &'static [Column];

    /// The cells of `object`'s row, one per [`Strategy::columns`] entry, as of `now`.
    fn cells(&self, object: &Value, now: SystemTime) -> Vec<Value>;

    /// The value of `field` in `object` as a field selector sees it, or `None` when Kubernetes
    /// does not let a field selector on this kind name `field`. Supported fields the object
    /// lacks read as `""`.
    fn field(&self, object: &Value, field: &str) -> Option<String>;

    /// Whether the kind has a field label conversion of its own in Kubernetes (it changes the
    /// message of an unsupported field; see [`fields::unsupported_message`]).
    fn has_field_conversion(&self) -> bool;

    /// Whether `metadata.generation` is kept and bumped on spec changes.
    fn tracks_generation(&self) -> bool;

    /// The status a created object starts with, whatever the client sent; `None` keeps it.
    fn status_on_create(&self) -> Option<Value>;

    /// The grace period a deletion of `current` gets, `requested` being the client's
    /// `gracePeriodSeconds`; 0 removes the object at once (finalizers permitting).
    fn deletion_grace(&self, current: &Value, requested: Option<i64>) -> i64;

    /// Whether a deleted object stays until its own controller removes it (namespaces: their
    /// contents go first).
    fn deleted_by_controller(&self) -> bool;

    /// Why the object named `name` may never be deleted, or `None` when it may.
    fn undeletable(&self, name: &str) -> Option<String>;

    /// What the registry allocates for objects of this kind.
    fn allocation(&self) -> Allocation;
}

/// A built-in kind typed by k8s-openapi. Implement this (not [`Strategy`]) for a built-in
/// kind: only [`Kind::Object`] and [`Kind::RESOURCE`] are required, every other item has
/// Kubernetes' default behaviour.
pub trait Kind: Send + Sync + 'static {
    /// The typed object.
    type Object: Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned
        + Clone
        + PartialEq
        + std::fmt::Debug
        + Send
        + Sync
        + 'static;

    /// How the kind is served.
    const RESOURCE: &'static ResourceType;

    /// The rule the object's name follows.
    const NAME_RULE: NameRule = NameRule::Subdomain;

    /// Whether `metadata.generation` is kept and bumped on spec changes.
    const TRACKS_GENERATION: bool = false;

    /// Whether Kubernetes has a field label conversion for this kind (see [`Kind::field`]).
    const FIELD_CONVERSION: bool = false;

    /// What the registry allocates for objects of this kind.
    const ALLOCATION: Allocation = Allocation::None;

    /// Whether a deleted object stays until its own controller removes it.
    const DELETED_BY_CONTROLLER: bool = false;

    /// Defaults applied on every write (Kubernetes' `SetDefaults_*`).
    fn default(_object: &mut Self::Object) {}

    /// Defaults applied only when the object is created, after [`Kind::default`].
    fn default_on_create(_object: &mut Self::Object) {}

    /// What an update carries over from the stored object, after [`Kind::default`].
    fn default_on_update(_new: &mut Self::Object, _old: &Self::Object) {}

    /// The kind's validation rules (object metadata is checked by the caller); `old` is the
    /// stored object on update.
    fn validate(_new: &Self::Object, _old: Option<&Self::Object>) -> Vec<FieldError> {
        Vec::new()
    }

    /// The `columnDefinitions` of a Table of this kind.
    fn columns() -> &'static [Column] {
        table::DEFAULT_COLUMNS
    }

    /// One row's cells, one per [`Kind::columns`] entry; `now` in nanoseconds since the epoch.
    fn cells(object: &Value, now: i128) -> Vec<Value> {
        vec![table::name(object), table::age(object, now)]
    }

    /// A selectable field; by default only `metadata.name` and `metadata.namespace`.
    fn field(object: &Value, field: &str) -> Option<String> {
        fields::meta(object, field)
    }

    /// The status a created object starts with; `None` keeps what the client sent.
    fn status_on_create() -> Option<Value> {
        None
    }

    /// The grace period a deletion gets; 0 by default (removed at once).
    fn deletion_grace(_current: &Value, _requested: Option<i64>) -> i64 {
        0
    }

    /// Why `name` may never be deleted, or `None`.
    fn undeletable(_name: &str) -> Option<String> {
        None
    }
}

impl<K: Kind> Strategy for K {
    fn resource(&self) -> &'static ResourceType {
        K::RESOURCE
    }

    fn normalize(&self, object: Value, old: Option<&Value>, strict: bool) -> Result<NormalizeOutcome, Rejected> {
        let resource = K::RESOURCE;
        let (mut typed, warnings) = decode::decode_written::<K::Object>(resource, object, strict)?;
        let old = old.map(|o| decode::decode_stored::<K::Object>(resource, o)).transpose()?;
        decode::prepare(resource, typed.metadata_mut(), old.as_ref().map(Metadata::metadata));
        K::default(&mut typed);
        match &old {
            None => K::default_on_create(&mut typed),
            Some(old) => K::default_on_update(&mut typed, old),
        }
        let mut errors =
            validation::validate_object_meta(typed.metadata(), resource.namespaced, K::NAME_RULE, "metadata");
        if let Some(old) = &old {
            errors.extend(validation::validate_object_meta_update(typed.metadata(), old.metadata(), "metadata"));
        }
        errors.extend(K::validate(&typed, old.as_ref()));
        if !errors.is_empty() {
            return Err(Rejected::Invalid(errors));
        }
        Ok(NormalizeOutcome { object: decode::encode(&typed)?, warnings })
    }

    fn roundtrip(&self, object: &Value) -> Result<Value, Rejected> {
        decode::encode(&decode::decode_stored::<K::Object>(K::RESOURCE, object)?)
    }

    fn columns(&self) -> &'static [Column] {
        K::columns()
    }

    fn cells(&self, object: &Value, now: SystemTime) -> Vec<Value> {
        K::cells(object, table::unix_nanos(now))
    }

    fn field(&self, object: &Value, field: &str) -> Option<String> {
        K::field(object, field)
    }

    fn has_field_conversion(&self) -> bool {
        K::FIELD_CONVERSION
    }

    fn tracks_generation(&self) -> bool {
        K::TRACKS_GENERATION
    }

    fn status_on_create(&self) -> Option<Value> {
        K::status_on_create()
    }

    fn deletion_grace(&self, current: &Value, requested: Option<i64>) -> i64 {
        K::deletion_grace(current, requested)
    }

    fn deleted_by_controller(&self) -> bool {
        K::DELETED_BY_CONTROLLER
    }

    fn undeletable(&self, name: &str) -> Option<String> {
        K::undeletable(name)
    }

    fn allocation(&self) -> Allocation {
        K::ALLOCATION
    }
}
