//! Typed decoding of written and stored objects, with Kubernetes' unknown-field handling and
//! error messages; each kind's strategy ([`crate::strategy`]) decodes through here before it
//! defaults and validates.
//!
//! Decoding walks the JSON with a small path-tracking deserializer, so a type error names the
//! field it happened in (`spec.replicas: invalid type: string "3", expected i32`), and the
//! message carries Kubernetes' prefix (`Deployment in version "v1" cannot be handled as a
//! Deployment: ...`). Unknown fields are found by re-encoding the typed value and looking for
//! input keys that disappeared; values that merely change representation (quantities,
//! int-or-string, timestamps) are not unknown fields.

use std::fmt;
use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::{self, DeserializeOwned};
use serde_json::Value;

use crate::field::FieldError;
use crate::resource::ResourceType;

/// Why an object was refused before it could be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The body does not decode (400 `BadRequest`); the message is complete, as Kubernetes
    /// words it (e.g. `Pod in version "v1" cannot be handled as a Pod: strict decoding error:
    /// unknown field "spec.foo"`).
    #[error("{0}")]
    BadRequest(String),
    /// The object decodes but breaks validation rules (422 `Invalid`); see
    /// [`invalid_message`] for the Status message.
    #[error("{}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

/// What [`crate::strategy::Strategy::normalize`] returns: the object to store and the warnings to send back.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizeOutcome {
    /// The defaulted, validated object, re-encoded with `apiVersion` and `kind` set.
    pub object: Value,
    /// `unknown field "spec.foo"` for each field dropped (non-strict decoding only).
    pub warnings: Vec<String>,
}

/// Decodes an object written to `resource` as `T`, with Kubernetes' unknown-field handling:
/// with `strict`, unknown fields are a `BadRequest`; without, they are dropped and returned as
/// warnings (`unknown field "spec.foo"`). The body's `apiVersion` and `kind`, when set, must be
/// the resource's.
pub fn decode_written<T: Serialize + DeserializeOwned>(
    resource: &ResourceType,
    object: Value,
    strict: bool,
) -> Result<(T, Vec<String>), Rejected> {
    let input = match object {
        Value::Object(mut map) => {
            check_type_meta(resource, &map)?;
            map.remove("apiVersion");
            map.remove("kind");
            Value::Object(map)
        }
        other => other,
    };
    let typed: T = decode_as(resource, &input)?;
    let roundtrip = encode(&typed)?;
    let mut unknown = Vec::new();
    unknown_fields(&input, &roundtrip, &mut String::new(), &mut unknown);
    let mut warnings: Vec<String> = unknown.iter().map(|path| format!("unknown field {path:?}")).collect();
    if strict && !warnings.is_empty() {
        let detail = format!("strict decoding error: {}", warnings.join(", "));
        return Err(Rejected::BadRequest(cannot_handle(resource, resource.kind, resource.version, &detail)));
    }
    warnings.dedup();
    Ok((typed, warnings))
}

/// Decodes an object read back from the store as `T`, ignoring unknown fields. `apiVersion`
/// and `kind`, when present, must match `resource`.
pub fn decode_stored<T: DeserializeOwned>(resource: &ResourceType, value: &Value) -> Result<T, Rejected> {
    match value {
        Value::Object(map) => {
            check_type_meta(resource, map)?;
            // The typed decoder checks a non-empty apiVersion and kind itself (and they match
            // now); only empty or null ones need removing, which costs a copy.
            let unusual = |key: &str| map.get(key).is_some_and(|v| v.as_str().is_none_or(str::is_empty));
            if unusual("apiVersion") || unusual("kind") {
                let mut map = map.clone();
                map.remove("apiVersion");
                map.remove("kind");
                decode_as(resource, &Value::Object(map))
            } else {
                decode_as(resource, value)
            }
        }
        other => decode_as(resource, other),
    }
}

/// The JSON form of a typed object (k8s-openapi sets `apiVersion` and `kind`).
pub fn encode<T: Serialize>(object: &T) -> Result<Value, Rejected> {
    serde_json::to_value(object).map_err(|e| Rejected::BadRequest(format!("cannot encode object: {e}")))
}

/// Decodes `value` into `T`; a failure is a `BadRequest` naming the field
/// (`spec.replicas: invalid type: string "3", expected i32`).
pub fn decode<T: DeserializeOwned>(value: &Value) -> Result<T, Rejected> {
    T::deserialize(Walker(value)).map_err(|e| Rejected::BadRequest(e.to_string()))
}

/// The message of a 422 `Invalid` Status: `Deployment.apps "web" is invalid: <errors>`, the
/// errors joined as Kubernetes does (one alone, several in brackets).
pub fn invalid_message(resource: &ResourceType, name: &str, errors: &[FieldError]) -> String {
    format!("{} {name:?} is invalid: {}", resource.qualified_kind(), join_errors(errors))
}

/// One error as is, several as `[a, b]`, identical ones once (Go's `utilerrors.Aggregate`).
fn join_errors(errors: &[FieldError]) -> String {
    let mut messages: Vec<String> = Vec::with_capacity(errors.len());
    for e in errors {
        let text = e.to_string();
        if !messages.contains(&text) {
            messages.push(text);
        }
    }
    match messages.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// `Kind in version "v" cannot be handled as a Kind: detail`, as Kubernetes prefixes decoding
/// errors.
fn cannot_handle(resource: &ResourceType, body_kind: &str, body_version: &str, detail: &str) -> String {
    format!("{body_kind} in version {body_version:?} cannot be handled as a {}: {detail}", resource.kind)
}

/// Checks the body's `apiVersion` and `kind` against the resource written to.
fn check_type_meta(resource: &ResourceType, map: &serde_json::Map<String, Value>) -> Result<(), Rejected> {
    let expected_version = resource.api_version();
    let api_version = match map.get("apiVersion") {
        None | Some(Value::Null) => expected_version.clone(),
        Some(Value::String(s)) if s.is_empty() => expected_version.clone(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            let detail = format!("apiVersion: invalid type: {}, expected a string", json_type(other));
            return Err(Rejected::BadRequest(cannot_handle(resource, resource.kind, resource.version, &detail)));
        }
    };
    let body_version = api_version.rsplit('/').next().unwrap_or_default().to_string();
    match map.get("kind") {
        None | Some(Value::Null) => {}
        Some(Value::String(kind)) if kind.is_empty() || kind == resource.kind => {}
        Some(Value::String(kind)) => {
            let detail = format!(
                "converting ({body_version}.{kind}) to ({}): unknown conversion: the kind in the data ({kind}) does \
                 not match the expected kind ({})",
                resource.kind, resource.kind
            );
            return Err(Rejected::BadRequest(cannot_handle(resource, kind, &body_version, &detail)));
        }
        Some(other) => {
            let detail = format!("kind: invalid type: {}, expected a string", json_type(other));
            return Err(Rejected::BadRequest(cannot_handle(resource, resource.kind, resource.version, &detail)));
        }
    }
    if api_version != expected_version {
        return Err(Rejected::BadRequest(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({expected_version})"
        )));
    }
    Ok(())
}

/// The kind of JSON value, as serde names it in type errors.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "sequence",
        Value::Object(_) => "map",
    }
}

/// Decodes `value` (without `apiVersion`/`kind`) as `T`, the type served for `resource`.
fn decode_as<T: DeserializeOwned>(resource: &ResourceType, value: &Value) -> Result<T, Rejected> {
    T::deserialize(Walker(value))
        .map_err(|e| Rejected::BadRequest(cannot_handle(resource, resource.kind, resource.version, &e.to_string())))
}

/// Metadata fix-ups Kubernetes makes before defaulting: cluster-scoped objects have no
/// namespace; an update keeps the stored uid (when none is given) and creation timestamp.
pub fn prepare(resource: &ResourceType, meta: &mut ObjectMeta, old: Option<&ObjectMeta>) {
    if !resource.namespaced {
        meta.namespace = None;
    }
    if let Some(old) = old {
        if meta.uid.as_deref().is_none_or(str::is_empty) {
            meta.uid.clone_from(&old.uid);
        }
        if old.creation_timestamp.is_some() {
            meta.creation_timestamp.clone_from(&old.creation_timestamp);
        }
    }
}

/// Appends to `out` the paths of keys of `input` that are missing from `known` (the typed
/// re-encoding), recursing through objects and arrays. Null values are never unknown.
fn unknown_fields(input: &Value, known: &Value, path: &mut String, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(input), Value::Object(known)) => {
            for (key, value) in input {
                if value.is_null() {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                match known.get(key) {
                    None => out.push(path.clone()),
                    Some(known) => unknown_fields(value, known, path, out),
                }
                path.truncate(len);
            }
        }
        (Value::Array(input), Value::Array(known)) => {
            for (i, (value, known)) in input.iter().zip(known).enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                unknown_fields(value, known, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// A decoding error and where it happened.
#[derive(Debug)]
struct DecodeError {
    message: String,
    /// Innermost segment first: errors collect their path on the way out.
    path: Vec<Segment>,
}

/// One step of a field path.
#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

impl DecodeError {
    fn within(mut self, segment: Segment) -> DecodeError {
        self.path.push(segment);
        self
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = String::new();
        for segment in self.path.iter().rev() {
            match segment {
                Segment::Key(key) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                Segment::Index(i) => {
                    let _ = write!(path, "[{i}]");
                }
            }
        }
        if path.is_empty() { f.write_str(&self.message) } else { write!(f, "{path}: {}", self.message) }
    }
}

impl std::error::Error for DecodeError {}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError { message: msg.to_string(), path: Vec::new() }
    }
}

/// A deserializer over a borrowed JSON value that records the path of the first error.
struct Walker<'de>(&'de Value);

impl<'de> de::Deserializer<'de> for Walker<'de> {
    type Error = DecodeError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(SeqWalker { items: items.iter().enumerate() }),
            Value::Object(map) => visitor.visit_map(MapWalker { entries: map.iter(), pending: None }),
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(de::value::BorrowedStrDeserializer::<DecodeError>::new(s)),
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit unit_struct
        seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// The elements of a JSON array, each tagged with its index on error.
struct SeqWalker<'de> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Value>>,
}

impl<'de> de::SeqAccess<'de> for SeqWalker<'de> {
    type Error = DecodeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DecodeError> {
        match self.items.next() {
            Some((i, value)) => seed.deserialize(Walker(value)).map(Some).map_err(|e| e.within(Segment::Index(i))),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// The entries of a JSON object, each value tagged with its key on error.
struct MapWalker<'de> {
    entries: serde_json::map::Iter<'de>,
    pending: Option<(&'de String, &'de Value)>,
}

impl<'de> de::MapAccess<'de> for MapWalker<'de> {
    type Error = DecodeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DecodeError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.pending = Some((key, value));
                seed.deserialize(de::value::BorrowedStrDeserializer::<DecodeError>::new(key))
                    .map(Some)
                    .map_err(|e| e.within(Segment::Key(key.clone())))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DecodeError> {
        let Some((key, value)) = self.pending.take() else {
            return Err(de::Error::custom("a map value was requested before its key"));
        };
        seed.deserialize(Walker(value)).map_err(|e| e.within(Segment::Key(key.clone())))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::Reason;
    use crate::kinds::normalize;
    use crate::resource::find;
    use serde_json::json;

    fn resource(group: &str, plural: &str) -> &'static ResourceType {
        find(group, "v1", plural).expect("served resource")
    }

    fn deployment(extra_spec: Value) -> Value {
        let mut spec = json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
            }
        });
        if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra_spec) {
            spec.extend(extra);
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec
        })
    }

    fn pod(containers: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": containers}
        })
    }

    #[test]
    fn every_served_resource_has_a_typed_decoder() {
        for kind in crate::kinds::KINDS {
            let r = kind.resource();
            let object = json!({"metadata": {"name": "x"}});
            let encoded = kind.roundtrip(&object).expect("decodes and encodes");
            assert_eq!(encoded["apiVersion"], r.api_version(), "{}", r.plural);
            assert_eq!(encoded["kind"], r.kind, "{}", r.plural);
        }
    }

    #[test]
    fn a_valid_deployment_is_defaulted_and_gets_api_version_and_kind() {
        let deployments = resource("apps", "deployments");
        let mut body = deployment(json!({}));
        body.as_object_mut().expect("object").remove("kind");
        let out = normalize(deployments, body, None, true).expect("valid");
        assert!(out.warnings.is_empty());
        assert_eq!(out.object["apiVersion"], "apps/v1");
        assert_eq!(out.object["kind"], "Deployment");
        assert_eq!(out.object["spec"]["replicas"], 1);
        assert_eq!(out.object["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(out.object["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn a_type_error_is_a_bad_request_naming_the_field() {
        let deployments = resource("apps", "deployments");
        let err = normalize(deployments, deployment(json!({"replicas": "3"})), None, false).expect_err("bad type");
        assert_eq!(
            err,
            Rejected::BadRequest(
                "Deployment in version \"v1\" cannot be handled as a Deployment: spec.replicas: invalid type: \
                 string \"3\", expected i32"
                    .into()
            )
        );
    }

    #[test]
    fn a_type_error_inside_a_list_names_the_index() {
        let pods = resource("", "pods");
        let body = pod(json!([{"name": "a", "image": "x", "ports": [{"containerPort": "80"}]}]));
        let Err(Rejected::BadRequest(message)) = normalize(pods, body, None, false) else {
            panic!("expected a bad request");
        };
        assert!(message.contains("spec.containers[0].ports[0].containerPort: invalid type"), "{message}");
    }

    #[test]
    fn strict_decoding_refuses_unknown_fields_with_kubernetes_wording() {
        let deployments = resource("apps", "deployments");
        let mut body = deployment(json!({"foo": 1}));
        body["spec"]["template"]["spec"]["containers"][0]["imagee"] = json!("nginx");
        let err = normalize(deployments, body, None, true).expect_err("strict");
        assert_eq!(
            err,
            Rejected::BadRequest(
                "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown \
                 field \"spec.foo\", unknown field \"spec.template.spec.containers[0].imagee\""
                    .into()
            )
        );
    }

    #[test]
    fn lenient_decoding_drops_unknown_fields_and_warns() {
        let deployments = resource("apps", "deployments");
        let out = normalize(deployments, deployment(json!({"foo": {"bar": 1}})), None, false).expect("valid");
        assert_eq!(out.warnings, vec!["unknown field \"spec.foo\"".to_string()]);
        assert!(out.object["spec"].get("foo").is_none());
    }

    #[test]
    fn representation_changes_and_nulls_are_not_unknown_fields() {
        let pods = resource("", "pods");
        let mut body = pod(json!([{
            "name": "a",
            "image": "nginx",
            "resources": {"limits": {"cpu": 1, "memory": "128Mi"}, "requests": {"cpu": "100m"}},
            "ports": [{"containerPort": 80}],
            "livenessProbe": {"httpGet": {"port": "http"}},
            "env": []
        }]));
        body["metadata"]["creationTimestamp"] = Value::Null;
        body["metadata"]["labels"] = json!({});
        body["spec"]["nodeSelector"] = Value::Null;
        body["status"] = json!({});
        let out = normalize(pods, body, None, true).expect("valid");
        assert!(out.warnings.is_empty());
        assert_eq!(out.object["spec"]["containers"][0]["resources"]["limits"]["cpu"], "1");
    }

    #[test]
    fn validation_errors_are_returned_as_invalid() {
        let pods = resource("", "pods");
        let err = normalize(pods, pod(json!([{"name": "a"}])), None, false).expect_err("no image");
        let Rejected::Invalid(errors) = err else { panic!("expected Invalid") };
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].reason, Reason::FieldValueRequired);
        assert_eq!(errors[0].to_string(), "spec.containers[0].image: Required value");
    }

    #[test]
    fn a_mismatched_api_version_is_a_bad_request() {
        let pods = resource("", "pods");
        let mut body = pod(json!([{"name": "a", "image": "x"}]));
        body["apiVersion"] = json!("apps/v1");
        assert_eq!(
            normalize(pods, body, None, false),
            Err(Rejected::BadRequest(
                "the API version in the data (apps/v1) does not match the expected API version (v1)".into()
            ))
        );
    }

    #[test]
    fn a_mismatched_kind_is_a_bad_request() {
        let pods = resource("", "pods");
        let mut body = pod(json!([{"name": "a", "image": "x"}]));
        body["kind"] = json!("Service");
        let Err(Rejected::BadRequest(message)) = normalize(pods, body, None, false) else {
            panic!("expected a bad request");
        };
        assert!(message.starts_with("Service in version \"v1\" cannot be handled as a Pod"), "{message}");
    }

    #[test]
    fn an_update_keeps_uid_and_creation_timestamp_and_checks_immutable_fields() {
        let pods = resource("", "pods");
        let mut stored = pod(json!([{"name": "a", "image": "nginx:1"}]));
        stored["metadata"]["uid"] = json!("1234");
        stored["metadata"]["creationTimestamp"] = json!("2024-01-02T03:04:05Z");
        let stored = normalize(pods, stored, None, true).expect("valid").object;

        let mut update = pod(json!([{"name": "a", "image": "nginx:2"}]));
        update["metadata"]["labels"] = json!({"x": "y"});
        let out = normalize(pods, update, Some(&stored), true).expect("image may change");
        assert_eq!(out.object["metadata"]["uid"], "1234");
        assert_eq!(out.object["metadata"]["creationTimestamp"], "2024-01-02T03:04:05Z");

        let mut renamed = stored.clone();
        renamed["metadata"]["name"] = json!("q");
        let Err(Rejected::Invalid(errors)) = normalize(pods, renamed, Some(&stored), true) else {
            panic!("expected Invalid");
        };
        assert_eq!(errors[0].to_string(), "metadata.name: Invalid value: \"q\": field is immutable");
    }

    #[test]
    fn a_cluster_scoped_object_loses_its_namespace() {
        let namespaces = resource("", "namespaces");
        let body = json!({"metadata": {"name": "team-a", "namespace": "default"}});
        let out = normalize(namespaces, body, None, true).expect("valid");
        assert!(out.object["metadata"].get("namespace").is_none());
        assert_eq!(out.object["status"]["phase"], "Active");
        assert_eq!(out.object["spec"]["finalizers"], json!(["kubernetes"]));
    }

    #[test]
    fn decode_names_the_field_of_a_type_error() {
        let err = decode::<k8s_openapi::api::core::v1::ServicePort>(&json!({"port": true})).expect_err("bad type");
        assert_eq!(err, Rejected::BadRequest("port: invalid type: boolean `true`, expected i32".into()));
        let ok: k8s_openapi::api::core::v1::ServicePort = decode(&json!({"port": 80})).expect("decodes");
        assert_eq!(ok.port, 80);
    }

    #[test]
    fn invalid_messages_join_errors_like_kubernetes() {
        let deployments = resource("apps", "deployments");
        let one = [FieldError::required("spec.selector")];
        assert_eq!(
            invalid_message(deployments, "web", &one),
            "Deployment.apps \"web\" is invalid: spec.selector: Required value"
        );
        let two = [FieldError::required("a"), FieldError::required("b"), FieldError::required("a")];
        assert_eq!(Rejected::Invalid(two.to_vec()).to_string(), "[a: Required value, b: Required value]");
    }

    #[test]
    fn secrets_accept_string_data_and_store_it_as_data() {
        let secrets = resource("", "secrets");
        let body = json!({"metadata": {"name": "s", "namespace": "default"}, "stringData": {"user": "admin"}});
        let out = normalize(secrets, body, None, true).expect("valid");
        assert_eq!(out.object["data"]["user"], "YWRtaW4=");
        assert!(out.object.get("stringData").is_none());
        assert_eq!(out.object["type"], "Opaque");
    }
}
