//! The registry in a kind's k8s-openapi type: what controllers write with, so they change
//! fields rather than JSON paths. Each call is the untyped one (same defaults, validation,
//! compare-and-swap and retries) with the object encoded on the way in and decoded on the way
//! out.

use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use trireme_model::resource::ResourceType;
use trireme_model::strategy::Kind;
use trireme_model::version::ReadAt;

use crate::registry::Registry;
use crate::registry::RegistryError;
use crate::registry::Scope;
use crate::registry::WriteOptions;

/// Encodes a typed object (with its apiVersion and kind).
pub fn to_value<T: serde::Serialize>(object: &T) -> Result<Value, RegistryError> {
    serde_json::to_value(object).map_err(|e| RegistryError::Internal(format!("cannot encode: {e}")))
}

/// Decodes a stored object into its type. One that does not fit (a foreign write through the
/// etcd API) is `Internal`.
pub fn from_value<K: Kind>(object: Value) -> Result<K::Object, RegistryError> {
    serde_json::from_value(object)
        .map_err(|e| RegistryError::Corrupt(format!("a stored {} does not decode: {e}", K::RESOURCE.kind)))
}

impl Registry {
    /// Creates `object` of kind `K` in its namespace; returns it as stored.
    pub async fn create_object<K: Kind>(
        &self,
        object: &K::Object,
        options: &WriteOptions,
    ) -> Result<K::Object, RegistryError> {
        let namespace = object.metadata().namespace.clone();
        let written = self.create(K::RESOURCE, namespace.as_deref(), to_value(object)?, options).await?;
        from_value::<K>(written.object)
    }

    /// Read-modify-write of the object of kind `K` at `namespace`/`name`: `change` edits the
    /// current object in place (retried on conflicts, like [`Registry::update_with`]; a change
    /// that changes nothing writes nothing). `precondition` is a resourceVersion the current
    /// object must have. Returns the object as stored.
    pub async fn update_object<K: Kind>(
        &self,
        namespace: Option<&str>,
        name: &str,
        scope: Scope,
        options: &WriteOptions,
        mut change: impl FnMut(&mut K::Object),
        precondition: Option<String>,
    ) -> Result<K::Object, RegistryError> {
        let edit = |current: &Value| {
            let mut object = from_value::<K>(current.clone())?;
            change(&mut object);
            to_value(&object)
        };
        let written = self.update_with(K::RESOURCE, namespace, name, scope, options, edit, precondition).await?;
        from_value::<K>(written.object)
    }

    /// The metadata of an object of any kind.
    pub async fn get_metadata(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        read: ReadAt,
    ) -> Result<ObjectMeta, RegistryError> {
        let object = self.get(rt, namespace, name, read).await?;
        metadata_of(&object)
    }

    /// Read-modify-write of the metadata of an object of any kind (owner references,
    /// finalizers, labels): the rest of the object is left as it is.
    pub async fn update_metadata(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &WriteOptions,
        mut change: impl FnMut(&mut ObjectMeta),
    ) -> Result<ObjectMeta, RegistryError> {
        let edit = |current: &Value| {
            let mut meta = metadata_of(current)?;
            change(&mut meta);
            let mut next = current.clone();
            next["metadata"] = to_value(&meta)?;
            Ok(next)
        };
        let written = self.update_with(rt, namespace, name, Scope::Main, options, edit, None).await?;
        metadata_of(&written.object)
    }
}

/// The metadata of a stored object.
pub fn metadata_of(object: &Value) -> Result<ObjectMeta, RegistryError> {
    let meta = object.get("metadata").cloned().unwrap_or(Value::Null);
    serde_json::from_value(meta).map_err(|e| RegistryError::Corrupt(format!("stored metadata does not decode: {e}")))
}
