//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded into the
//! JSON object the JSON API would carry.
//!
//! kubectl's imperative commands (`kubectl create deployment`, `kubectl create secret generic`,
//! `kubectl create service`, ...) send built-in objects as protobuf: the magic bytes `k8s\0`, then
//! a `runtime.Unknown` envelope whose `typeMeta` names the kind and whose `raw` holds the object as
//! encoded by k8s.io/api's `generated.proto`. Everything past the HTTP layer speaks JSON, so
//! [`decode`] turns such a body into what a JSON client would have sent: camelCase names, unset
//! fields left out, and `apiVersion`/`kind` taken from the envelope.
//!
//! Every supported message has a field table (`Schema`) holding Kubernetes' field numbers, taken
//! from kubernetes/api's and kubernetes/apimachinery's `generated.proto` together with the json
//! tags of the matching `types.go`. The tags matter because the bodies are proto2 written by
//! gogo-protobuf, which puts every non-pointer Go field on the wire even when it is empty: being on
//! the wire does not mean "set". A field's `Shape` therefore says what Go's `encoding/json` would
//! do with a zero value: drop it (`omitempty` on a non-pointer, e.g. an empty `clusterIP`) or keep
//! it (a pointer such as `replicas: 0`, or a field without `omitempty` such as a port's `port`).
//!
//! A field without a table (a volume type, affinity, a field newer than the table) is accepted
//! only while it holds its zero value; anything else is an error naming the field and pointing at
//! JSON, so nothing a client sent is silently dropped.

use axum::http::StatusCode;
use base64::Engine as _;
use k8s_openapi::jiff;
use prost::Message as _;
use prost::encoding::WireType;
use prost::encoding::decode_key;
use prost::encoding::decode_varint;
use serde_json::Map;
use serde_json::Value;

use crate::status::Failure;

/// The media type of Kubernetes protobuf bodies, as kubectl sends it in `Content-Type`.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with: `k8s` and a zero byte.
pub const MAGIC: [u8; 4] = *b"k8s\0";

/// What kubectl users can do instead when a body cannot be decoded from protobuf.
const USE_JSON: &str =
    "send the object as JSON instead, e.g. `kubectl create ... -o yaml --dry-run=client | kubectl apply -f -`";

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with [`MAGIC`].
    #[error("the body is not a Kubernetes protobuf message: it does not start with the bytes \"k8s\\x00\"")]
    NotProtobuf,
    /// The body is [`MAGIC`] and nothing else.
    #[error("the protobuf body is empty")]
    Empty,
    /// The bytes are not valid protobuf (truncated, a bad tag, a field of the wrong wire type, ...).
    #[error("malformed protobuf in {message}: {reason}")]
    Malformed {
        /// The message being decoded.
        message: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The envelope does not say what the object is.
    #[error("the protobuf envelope does not name the object's apiVersion and kind")]
    MissingKind,
    /// The envelope says the raw bytes are compressed or otherwise encoded.
    #[error("protobuf bodies with content encoding {0:?} are not supported; {USE_JSON}")]
    UnsupportedEncoding(String),
    /// A kind this module has no tables for.
    #[error("{kind} ({api_version}) is not supported over protobuf by this server; {USE_JSON}")]
    UnsupportedKind {
        /// The envelope's `apiVersion`.
        api_version: String,
        /// The envelope's `kind`.
        kind: String,
    },
    /// A field this module has no table for, holding something other than its zero value.
    #[error("{message} field {number} ({field}) is not supported over protobuf by this server; {USE_JSON}")]
    UnsupportedField {
        /// The message holding the field.
        message: &'static str,
        /// The field's JSON name, or `unknown` for a number missing from generated.proto.
        field: &'static str,
        /// The field number.
        number: u32,
    },
}

impl ProtobufError {
    /// Whether the body was well formed but holds something this server cannot decode, which is
    /// a 415 UnsupportedMediaType rather than a 400 BadRequest.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            ProtobufError::UnsupportedEncoding(_)
                | ProtobufError::UnsupportedKind { .. }
                | ProtobufError::UnsupportedField { .. }
        )
    }
}

impl From<ProtobufError> for Failure {
    fn from(error: ProtobufError) -> Failure {
        let (code, reason) = if error.is_unsupported() {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType")
        } else {
            (StatusCode::BAD_REQUEST, "BadRequest")
        };
        Failure { code, reason, message: error.to_string(), details: None }
    }
}

fn malformed(message: &'static str, reason: impl std::fmt::Display) -> ProtobufError {
    ProtobufError::Malformed { message, reason: reason.to_string() }
}

/// `runtime.Unknown` (apimachinery pkg/runtime/generated.proto), the envelope of every body.
#[derive(Clone, PartialEq, prost::Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    content_encoding: Option<String>,
    #[prost(string, optional, tag = "4")]
    content_type: Option<String>,
}

/// `runtime.TypeMeta` (apimachinery pkg/runtime/generated.proto).
#[derive(Clone, PartialEq, prost::Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

/// The kinds that can arrive as protobuf: those kubectl's imperative commands create.
static KINDS: &[(&str, &str, &Schema)] = &[
    ("v1", "ConfigMap", &CONFIG_MAP),
    ("v1", "Namespace", &NAMESPACE),
    ("v1", "Pod", &POD),
    ("v1", "Secret", &SECRET),
    ("v1", "Service", &SERVICE),
    ("v1", "ServiceAccount", &SERVICE_ACCOUNT),
    ("apps/v1", "Deployment", &DEPLOYMENT),
];

/// Decodes a Kubernetes protobuf body (magic, `runtime.Unknown` envelope, object) into the JSON
/// object the JSON API would carry.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body.strip_prefix(&MAGIC).ok_or(ProtobufError::NotProtobuf)?;
    if envelope.is_empty() {
        return Err(ProtobufError::Empty);
    }
    let unknown = Unknown::decode(envelope).map_err(|e| malformed("Unknown", e))?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtobufError::MissingKind);
    }
    if let Some(encoding) = unknown.content_encoding.filter(|e| !e.is_empty()) {
        return Err(ProtobufError::UnsupportedEncoding(encoding));
    }
    let Some(&(_, _, schema)) = KINDS.iter().find(|(v, k, _)| *v == api_version && *k == kind) else {
        return Err(ProtobufError::UnsupportedKind { api_version, kind });
    };
    let mut object = decode_message(schema, unknown.raw.as_deref().unwrap_or_default())?;
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(object))
}

/// A protobuf message: its name (for errors) and its fields.
struct Schema {
    name: &'static str,
    fields: &'static [Field],
}

/// One field of a message: its number in generated.proto, its JSON name and how it maps.
struct Field {
    number: u32,
    name: &'static str,
    shape: Shape,
}

/// How a field maps onto JSON.
#[derive(Clone, Copy)]
enum Shape {
    /// A single value, emitted whenever it is on the wire: a Go pointer (only sent when set) or a
    /// field without `omitempty` (always sent, and always in the JSON too).
    Keep(Ty),
    /// A single value dropped when zero: a non-pointer Go field with `omitempty`, which gogo sends
    /// even when empty. Messages are never dropped, as `encoding/json` never drops structs.
    Omit(Ty),
    /// A repeated field: a JSON array.
    List(Ty),
    /// A `map<string, …>`: a JSON object.
    Map(Ty),
    /// An embedded Go struct tagged `json:",inline"`: its fields join the enclosing object.
    Inline(&'static Schema),
    /// A field without a table: accepted only while zero.
    Unsupported,
}

/// The type of a value.
#[derive(Clone, Copy)]
enum Ty {
    /// `string`.
    Str,
    /// `bytes`: a base64 string, as `encoding/json` writes `[]byte`.
    Bytes,
    /// `bool`.
    Bool,
    /// `int32`.
    I32,
    /// `int64`.
    I64,
    /// A message with a table.
    Message(&'static Schema),
    /// `meta.v1.Time`: an RFC 3339 string, left out when zero.
    Time,
    /// `intstr.IntOrString`: a JSON number or string.
    IntOrString,
    /// `resource.Quantity`: its canonical string.
    Quantity,
}

const fn keep(number: u32, name: &'static str, ty: Ty) -> Field {
    Field { number, name, shape: Shape::Keep(ty) }
}

const fn omit(number: u32, name: &'static str, ty: Ty) -> Field {
    Field { number, name, shape: Shape::Omit(ty) }
}

const fn list(number: u32, name: &'static str, ty: Ty) -> Field {
    Field { number, name, shape: Shape::List(ty) }
}

const fn map(number: u32, name: &'static str, ty: Ty) -> Field {
    Field { number, name, shape: Shape::Map(ty) }
}

const fn inline(number: u32, schema: &'static Schema) -> Field {
    Field { number, name: "", shape: Shape::Inline(schema) }
}

const fn unsupported(number: u32, name: &'static str) -> Field {
    Field { number, name, shape: Shape::Unsupported }
}

/// Decodes one message into a JSON object. The tables hold no cycles, so the recursion is as
/// deep as the tables and no deeper, whatever the input.
fn decode_message(schema: &'static Schema, mut buf: &[u8]) -> Result<Map<String, Value>, ProtobufError> {
    let mut object = Map::new();
    while !buf.is_empty() {
        let (number, wire_type) = decode_key(&mut buf).map_err(|e| malformed(schema.name, e))?;
        let Some(field) = schema.fields.iter().find(|f| f.number == number) else {
            skip_zero(schema, number, "unknown", wire_type, &mut buf)?;
            continue;
        };
        match field.shape {
            Shape::Keep(ty) => {
                let value = decode_value(schema, number, ty, wire_type, &mut buf)?;
                set(&mut object, field.name, value);
            }
            Shape::Omit(ty) => {
                let value = decode_value(schema, number, ty, wire_type, &mut buf)?;
                set(&mut object, field.name, if is_zero(&value) { Value::Null } else { value });
            }
            Shape::List(ty) => {
                // Repeated fields arrive one element per key (proto2 without `packed`).
                let value = decode_value(schema, number, ty, wire_type, &mut buf)?;
                let list = object.entry(field.name).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = list {
                    list.push(value);
                }
            }
            Shape::Map(ty) => {
                expect_wire_type(schema, number, WireType::LengthDelimited, wire_type)?;
                let (key, value) = decode_map_entry(schema, ty, read_bytes(schema, &mut buf)?)?;
                let map = object.entry(field.name).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
            }
            Shape::Inline(inner) => {
                expect_wire_type(schema, number, WireType::LengthDelimited, wire_type)?;
                object.extend(decode_message(inner, read_bytes(schema, &mut buf)?)?);
            }
            Shape::Unsupported => skip_zero(schema, number, field.name, wire_type, &mut buf)?,
        }
    }
    Ok(object)
}

/// Records a singular field. The last occurrence wins, except that messages merge, as in
/// protobuf; `Null` (a zero that JSON leaves out) unsets the field.
fn set(object: &mut Map<String, Value>, name: &str, value: Value) {
    match (object.get_mut(name), value) {
        (_, Value::Null) => {
            object.remove(name);
        }
        (Some(Value::Object(existing)), Value::Object(more)) => existing.extend(more),
        (_, value) => {
            object.insert(name.to_string(), value);
        }
    }
}

/// Whether `encoding/json` would leave the value out under `omitempty`.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Array(_) | Value::Object(_) => false,
    }
}

fn decode_value(
    schema: &'static Schema,
    number: u32,
    ty: Ty,
    wire_type: WireType,
    buf: &mut &[u8],
) -> Result<Value, ProtobufError> {
    let expected = match ty {
        Ty::Bool | Ty::I32 | Ty::I64 => WireType::Varint,
        _ => WireType::LengthDelimited,
    };
    expect_wire_type(schema, number, expected, wire_type)?;
    Ok(match ty {
        // gogo does not check UTF-8 and encoding/json writes invalid bytes as U+FFFD; so do we.
        Ty::Str => Value::String(String::from_utf8_lossy(read_bytes(schema, buf)?).into_owned()),
        Ty::Bytes => Value::String(base64::engine::general_purpose::STANDARD.encode(read_bytes(schema, buf)?)),
        Ty::Bool => Value::Bool(read_varint(schema, buf)? != 0),
        // Negative int32s are sign-extended to 64 bits on the wire; the low 32 bits are the value.
        Ty::I32 => Value::from(read_varint(schema, buf)? as i32),
        Ty::I64 => Value::from(read_varint(schema, buf)? as i64),
        Ty::Message(inner) => Value::Object(decode_message(inner, read_bytes(schema, buf)?)?),
        Ty::Time => time(decode_message(&TIME, read_bytes(schema, buf)?)?)?,
        Ty::IntOrString => int_or_string(decode_message(&INT_OR_STRING, read_bytes(schema, buf)?)?)?,
        Ty::Quantity => {
            // An empty Quantity message is Go's zero Quantity, which JSON writes as "0".
            let quantity = decode_message(&QUANTITY, read_bytes(schema, buf)?)?;
            quantity.get("string").cloned().unwrap_or_else(|| Value::from("0"))
        }
    })
}

/// The zero value of a map entry's missing value, as Go's unmarshalling leaves it.
fn zero_value(ty: Ty) -> Value {
    match ty {
        Ty::Str | Ty::Bytes => Value::from(""),
        Ty::Bool => Value::Bool(false),
        Ty::I32 | Ty::I64 | Ty::IntOrString => Value::from(0),
        Ty::Message(_) => Value::Object(Map::new()),
        Ty::Time => Value::Null,
        Ty::Quantity => Value::from("0"),
    }
}

/// A `map<string, V>` entry: key 1, value 2.
fn decode_map_entry(schema: &'static Schema, ty: Ty, mut buf: &[u8]) -> Result<(String, Value), ProtobufError> {
    let mut key = String::new();
    let mut value = None;
    while !buf.is_empty() {
        let (number, wire_type) = decode_key(&mut buf).map_err(|e| malformed(schema.name, e))?;
        match number {
            1 => {
                expect_wire_type(schema, number, WireType::LengthDelimited, wire_type)?;
                key = String::from_utf8_lossy(read_bytes(schema, &mut buf)?).into_owned();
            }
            2 => value = Some(decode_value(schema, number, ty, wire_type, &mut buf)?),
            _ => skip_zero(schema, number, "unknown", wire_type, &mut buf)?,
        }
    }
    Ok((key, value.unwrap_or_else(|| zero_value(ty))))
}

/// Skips a field without a table, which is fine only when it holds its zero value: gogo sends
/// empty non-pointer fields, and losing anything else would silently drop what the client sent.
fn skip_zero(
    schema: &'static Schema,
    number: u32,
    name: &'static str,
    wire_type: WireType,
    buf: &mut &[u8],
) -> Result<(), ProtobufError> {
    let zero = match wire_type {
        WireType::Varint => read_varint(schema, buf)? == 0,
        WireType::LengthDelimited => read_bytes(schema, buf)?.is_empty(),
        WireType::ThirtyTwoBit => take(schema, buf, 4)?.iter().all(|b| *b == 0),
        WireType::SixtyFourBit => take(schema, buf, 8)?.iter().all(|b| *b == 0),
        // Kubernetes never uses groups.
        WireType::StartGroup | WireType::EndGroup => false,
    };
    if zero { Ok(()) } else { Err(ProtobufError::UnsupportedField { message: schema.name, field: name, number }) }
}

fn expect_wire_type(
    schema: &'static Schema,
    number: u32,
    expected: WireType,
    actual: WireType,
) -> Result<(), ProtobufError> {
    if expected == actual {
        Ok(())
    } else {
        Err(malformed(schema.name, format!("field {number} has wire type {actual:?}, expected {expected:?}")))
    }
}

fn read_varint(schema: &'static Schema, buf: &mut &[u8]) -> Result<u64, ProtobufError> {
    decode_varint(buf).map_err(|e| malformed(schema.name, e))
}

fn read_bytes<'a>(schema: &'static Schema, buf: &mut &'a [u8]) -> Result<&'a [u8], ProtobufError> {
    let len = read_varint(schema, buf)?;
    let len = usize::try_from(len).map_err(|_| malformed(schema.name, "a field's length does not fit in memory"))?;
    take(schema, buf, len)
}

fn take<'a>(schema: &'static Schema, buf: &mut &'a [u8], len: usize) -> Result<&'a [u8], ProtobufError> {
    if len > buf.len() {
        return Err(malformed(schema.name, "a field runs past the end of the message (truncated body?)"));
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Ok(head)
}

/// Go's zero `time.Time` in Unix seconds (0001-01-01T00:00:00Z), which JSON writes as null.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// `meta.v1.Time`: whole seconds as RFC 3339 (Kubernetes drops `nanos` when unmarshalling), or
/// `Null` for the zero time, which gogo sends as an empty message.
fn time(fields: Map<String, Value>) -> Result<Value, ProtobufError> {
    let Some(seconds) = fields.get("seconds").and_then(Value::as_i64) else { return Ok(Value::Null) };
    if seconds == GO_ZERO_TIME {
        return Ok(Value::Null);
    }
    let timestamp = jiff::Timestamp::from_second(seconds).map_err(|e| malformed(TIME.name, e))?;
    Ok(Value::String(timestamp.to_string()))
}

/// `intstr.IntOrString`: `type` 0 is `intVal`, 1 is `strVal`.
fn int_or_string(fields: Map<String, Value>) -> Result<Value, ProtobufError> {
    match fields.get("type").and_then(Value::as_i64).unwrap_or(0) {
        0 => Ok(fields.get("intVal").cloned().unwrap_or_else(|| Value::from(0))),
        1 => Ok(fields.get("strVal").cloned().unwrap_or_else(|| Value::from(""))),
        other => {
            Err(malformed(INT_OR_STRING.name, format!("IntOrString type {other} is neither 0 (int) nor 1 (string)")))
        }
    }
}

// The tables. Field numbers, JSON names and Keep/Omit come from generated.proto and types.go
// of kubernetes/api (core/v1, apps/v1) and kubernetes/apimachinery (pkg/apis/meta/v1,
// pkg/util/intstr, pkg/api/resource). Every field of a listed message has an entry, so
// `unsupported` marks a field that is known but has no table.

/// `meta.v1.Time` (and `Timestamp`, its wire form).
static TIME: Schema = Schema { name: "Time", fields: &[keep(1, "seconds", Ty::I64), keep(2, "nanos", Ty::I32)] };

static INT_OR_STRING: Schema = Schema {
    name: "IntOrString",
    fields: &[keep(1, "type", Ty::I64), keep(2, "intVal", Ty::I32), keep(3, "strVal", Ty::Str)],
};

static QUANTITY: Schema = Schema { name: "Quantity", fields: &[keep(1, "string", Ty::Str)] };

static OBJECT_META: Schema = Schema {
    name: "ObjectMeta",
    fields: &[
        omit(1, "name", Ty::Str),
        omit(2, "generateName", Ty::Str),
        omit(3, "namespace", Ty::Str),
        omit(4, "selfLink", Ty::Str),
        omit(5, "uid", Ty::Str),
        omit(6, "resourceVersion", Ty::Str),
        omit(7, "generation", Ty::I64),
        omit(8, "creationTimestamp", Ty::Time),
        keep(9, "deletionTimestamp", Ty::Time),
        keep(10, "deletionGracePeriodSeconds", Ty::I64),
        map(11, "labels", Ty::Str),
        map(12, "annotations", Ty::Str),
        list(13, "ownerReferences", Ty::Message(&OWNER_REFERENCE)),
        list(14, "finalizers", Ty::Str),
        unsupported(17, "managedFields"),
    ],
};

static OWNER_REFERENCE: Schema = Schema {
    name: "OwnerReference",
    fields: &[
        keep(1, "kind", Ty::Str),
        keep(3, "name", Ty::Str),
        keep(4, "uid", Ty::Str),
        keep(5, "apiVersion", Ty::Str),
        keep(6, "controller", Ty::Bool),
        keep(7, "blockOwnerDeletion", Ty::Bool),
    ],
};

static LABEL_SELECTOR: Schema = Schema {
    name: "LabelSelector",
    fields: &[map(1, "matchLabels", Ty::Str), list(2, "matchExpressions", Ty::Message(&LABEL_SELECTOR_REQUIREMENT))],
};

static LABEL_SELECTOR_REQUIREMENT: Schema = Schema {
    name: "LabelSelectorRequirement",
    fields: &[keep(1, "key", Ty::Str), keep(2, "operator", Ty::Str), list(3, "values", Ty::Str)],
};

static CONDITION: Schema = Schema {
    name: "Condition",
    fields: &[
        keep(1, "type", Ty::Str),
        keep(2, "status", Ty::Str),
        omit(3, "observedGeneration", Ty::I64),
        keep(4, "lastTransitionTime", Ty::Time),
        keep(5, "reason", Ty::Str),
        keep(6, "message", Ty::Str),
    ],
};

static NAMESPACE: Schema = Schema {
    name: "Namespace",
    fields: &[
        omit(1, "metadata", Ty::Message(&OBJECT_META)),
        omit(2, "spec", Ty::Message(&NAMESPACE_SPEC)),
        omit(3, "status", Ty::Message(&NAMESPACE_STATUS)),
    ],
};

static NAMESPACE_SPEC: Schema = Schema { name: "NamespaceSpec", fields: &[list(1, "finalizers", Ty::Str)] };

static NAMESPACE_STATUS: Schema = Schema {
    name: "NamespaceStatus",
    fields: &[omit(1, "phase", Ty::Str), list(2, "conditions", Ty::Message(&NAMESPACE_CONDITION))],
};

static NAMESPACE_CONDITION: Schema = Schema {
    name: "NamespaceCondition",
    fields: &[
        keep(1, "type", Ty::Str),
        keep(2, "status", Ty::Str),
        omit(4, "lastTransitionTime", Ty::Time),
        omit(5, "reason", Ty::Str),
        omit(6, "message", Ty::Str),
    ],
};

static CONFIG_MAP: Schema = Schema {
    name: "ConfigMap",
    fields: &[
        omit(1, "metadata", Ty::Message(&OBJECT_META)),
        map(2, "data", Ty::Str),
        map(3, "binaryData", Ty::Bytes),
        keep(4, "immutable", Ty::Bool),
    ],
};

static SECRET: Schema = Schema {
    name: "Secret",
    fields: &[
        omit(1, "metadata", Ty::Message(&OBJECT_META)),
        map(2, "data", Ty::Bytes),
        omit(3, "type", Ty::Str),
        map(4, "stringData", Ty::Str),
        keep(5, "immutable", Ty::Bool),
    ],
};

static SERVICE_ACCOUNT: Schema = Schema {
    name: "ServiceAccount",
    fields: &[
        omit(1, "metadata", Ty::Message(&OBJECT_META)),
        list(2, "secrets", Ty::Message(&OBJECT_REFERENCE)),
        list(3, "imagePullSecrets", Ty::Message(&LOCAL_OBJECT_REFERENCE)),
        keep(4, "automountServiceAccountToken", Ty::Bool),
    ],
};

static OBJECT_REFERENCE: Schema = Schema {
    name: "ObjectReference",
    fields: &[
        omit(1, "kind", Ty::Str),
        omit(2, "namespace", Ty::Str),
        omit(3, "name", Ty::Str),
        omit(4, "uid", Ty::Str),
        omit(5, "apiVersion", Ty::Str),
        omit(6, "resourceVersion", Ty::Str),
        omit(7, "fieldPath", Ty::Str),
    ],
};

static LOCAL_OBJECT_REFERENCE: Schema = Schema { name: "LocalObjectReference", fields: &[omit(1, "name", Ty::Str)] };

static SERVICE: Schema = Schema {
    name: "Service",
    fields: &[
        omit(1, "metadata", Ty::Message(&OBJECT_META)),
        omit(2, "spec", Ty::Message(&SERVICE_SPEC)),
        omit(3, "status", Ty::Message(&SERVICE_STATUS)),
    ],
};

static SERVICE_SPEC: Schema = Schema {
    name: "ServiceSpec",
    fields: &[
        list(1, "ports", Ty::Message(&SERVICE_PORT)),
        map(2, "selector", Ty::Str),
        omit(3, "clusterIP", Ty::Str),
        omit(4, "type", Ty::Str),
        list(5, "externalIPs", Ty::Str),
        omit(7, "sessionAffinity", Ty::Str),
        omit(8, "loadBalancerIP", Ty::Str),
        list(9, "loadBalancerSourceRanges", Ty::Str),
        omit(10, "externalName", Ty::Str),
        omit(11, "externalTrafficPolicy", Ty::Str),
        omit(12, "healthCheckNodePort", Ty::I32),
        omit(13, "publishNotReadyAddresses", Ty::Bool),
        keep(14, "sessionAffinityConfig", Ty::Message(&SESSION_AFFINITY_CONFIG)),
        keep(17, "ipFamilyPolicy", Ty::Str),
        list(18, "clusterIPs", Ty::Str),
        list(19, "ipFamilies", Ty::Str),
        keep(20, "allocateLoadBalancerNodePorts", Ty::Bool),
        keep(21, "loadBalancerClass", Ty::Str),
        keep(22, "internalTrafficPolicy", Ty::Str),
        keep(23, "trafficDistribution", Ty::Str),
    ],
};

static SERVICE_PORT: Schema = Schema {
    name: "ServicePort",
    fields: &[
        omit(1, "name", Ty::Str),
        omit(2, "protocol", Ty::Str),
        keep(3, "port", Ty::I32),
        omit(4, "targetPort", Ty::IntOrString),
        omit(5, "nodePort", Ty::I32),
        keep(6, "appProtocol", Ty::Str),
    ],
};

static SESSION_AFFINITY_CONFIG: Schema =
    Schema { name: "SessionAffinityConfig", fields: &[keep(1, "clientIP", Ty::Message(&CLIENT_IP_CONFIG))] };

static CLIENT_IP_CONFIG: Schema = Schema { name: "ClientIPConfig", fields: &[keep(1, "timeoutSeconds", Ty::I32)] };

static SERVICE_STATUS: Schema = Schema {
    name: "ServiceStatus",
    fields: &[
        omit(1, "loadBalancer", Ty::Message(&LOAD_BALANCER_STATUS)),
        list(2, "conditions", Ty::Message(&CONDITION)),
    ],
};

static LOAD_BALANCER_STATUS: Schema =
    Schema { name: "LoadBalancerStatus", fields: &[list(1, "ingress", Ty::Message(&LOAD_BALANCER_INGRESS))] };

static LOAD_BALANCER_INGRESS: Schema = Schema {
    name: "LoadBalancerIngress",
    fields: &[
        omit(1, "ip", Ty::Str),
        omit(2, "hostname", Ty::Str),
        keep(3, "ipMode", Ty::Str),
        list(4, "ports", Ty::Message(&PORT_STATUS)),
    ],
};

static PORT_STATUS: Schema = Schema {
    name: "PortStatus",
    fields: &[keep(1, "port", Ty::I32), keep(2, "protocol", Ty::Str), keep(3, "error", Ty::Str)],
};

static POD: Schema = Schema {
    name: "Pod",
    fields: &[
        omit(1, "metadata", Ty::Message(&OBJECT_META)),
        omit(2, "spec", Ty::Message(&POD_SPEC)),
        omit(3, "status", Ty::Message(&POD_STATUS)),
    ],
};

static POD_SPEC: Schema = Schema {
    name: "PodSpec",
    fields: &[
        list(1, "volumes", Ty::Message(&VOLUME)),
        list(2, "containers", Ty::Message(&CONTAINER)),
        omit(3, "restartPolicy", Ty::Str),
        keep(4, "terminationGracePeriodSeconds", Ty::I64),
        keep(5, "activeDeadlineSeconds", Ty::I64),
        omit(6, "dnsPolicy", Ty::Str),
        map(7, "nodeSelector", Ty::Str),
        omit(8, "serviceAccountName", Ty::Str),
        omit(9, "serviceAccount", Ty::Str),
        omit(10, "nodeName", Ty::Str),
        omit(11, "hostNetwork", Ty::Bool),
        omit(12, "hostPID", Ty::Bool),
        omit(13, "hostIPC", Ty::Bool),
        unsupported(14, "securityContext"),
        list(15, "imagePullSecrets", Ty::Message(&LOCAL_OBJECT_REFERENCE)),
        omit(16, "hostname", Ty::Str),
        omit(17, "subdomain", Ty::Str),
        unsupported(18, "affinity"),
        omit(19, "schedulerName", Ty::Str),
        list(20, "initContainers", Ty::Message(&CONTAINER)),
        keep(21, "automountServiceAccountToken", Ty::Bool),
        list(22, "tolerations", Ty::Message(&TOLERATION)),
        unsupported(23, "hostAliases"),
        omit(24, "priorityClassName", Ty::Str),
        keep(25, "priority", Ty::I32),
        unsupported(26, "dnsConfig"),
        keep(27, "shareProcessNamespace", Ty::Bool),
        unsupported(28, "readinessGates"),
        keep(29, "runtimeClassName", Ty::Str),
        keep(30, "enableServiceLinks", Ty::Bool),
        keep(31, "preemptionPolicy", Ty::Str),
        map(32, "overhead", Ty::Quantity),
        unsupported(33, "topologySpreadConstraints"),
        unsupported(34, "ephemeralContainers"),
        keep(35, "setHostnameAsFQDN", Ty::Bool),
        unsupported(36, "os"),
        keep(37, "hostUsers", Ty::Bool),
        unsupported(38, "schedulingGates"),
        unsupported(39, "resourceClaims"),
        keep(40, "resources", Ty::Message(&RESOURCE_REQUIREMENTS)),
        keep(41, "hostnameOverride", Ty::Str),
        unsupported(43, "schedulingGroup"),
        unsupported(44, "evictionResponders"),
    ],
};

static POD_STATUS: Schema = Schema {
    name: "PodStatus",
    fields: &[
        omit(1, "phase", Ty::Str),
        unsupported(2, "conditions"),
        omit(3, "message", Ty::Str),
        omit(4, "reason", Ty::Str),
        omit(5, "hostIP", Ty::Str),
        omit(6, "podIP", Ty::Str),
        keep(7, "startTime", Ty::Time),
        unsupported(8, "containerStatuses"),
        omit(9, "qosClass", Ty::Str),
        unsupported(10, "initContainerStatuses"),
        omit(11, "nominatedNodeName", Ty::Str),
        unsupported(12, "podIPs"),
        unsupported(13, "ephemeralContainerStatuses"),
        omit(14, "resize", Ty::Str),
        unsupported(15, "resourceClaimStatuses"),
        unsupported(16, "hostIPs"),
        omit(17, "observedGeneration", Ty::I64),
        unsupported(18, "extendedResourceClaimStatus"),
        map(19, "allocatedResources", Ty::Quantity),
        keep(20, "resources", Ty::Message(&RESOURCE_REQUIREMENTS)),
        unsupported(21, "nodeAllocatableResourceClaimStatuses"),
        unsupported(22, "volumeHealth"),
    ],
};

static POD_TEMPLATE_SPEC: Schema = Schema {
    name: "PodTemplateSpec",
    fields: &[omit(1, "metadata", Ty::Message(&OBJECT_META)), omit(2, "spec", Ty::Message(&POD_SPEC))],
};

static CONTAINER: Schema = Schema {
    name: "Container",
    fields: &[
        keep(1, "name", Ty::Str),
        omit(2, "image", Ty::Str),
        list(3, "command", Ty::Str),
        list(4, "args", Ty::Str),
        omit(5, "workingDir", Ty::Str),
        list(6, "ports", Ty::Message(&CONTAINER_PORT)),
        list(7, "env", Ty::Message(&ENV_VAR)),
        omit(8, "resources", Ty::Message(&RESOURCE_REQUIREMENTS)),
        list(9, "volumeMounts", Ty::Message(&VOLUME_MOUNT)),
        keep(10, "livenessProbe", Ty::Message(&PROBE)),
        keep(11, "readinessProbe", Ty::Message(&PROBE)),
        unsupported(12, "lifecycle"),
        omit(13, "terminationMessagePath", Ty::Str),
        omit(14, "imagePullPolicy", Ty::Str),
        unsupported(15, "securityContext"),
        omit(16, "stdin", Ty::Bool),
        omit(17, "stdinOnce", Ty::Bool),
        omit(18, "tty", Ty::Bool),
        list(19, "envFrom", Ty::Message(&ENV_FROM_SOURCE)),
        omit(20, "terminationMessagePolicy", Ty::Str),
        unsupported(21, "volumeDevices"),
        keep(22, "startupProbe", Ty::Message(&PROBE)),
        unsupported(23, "resizePolicy"),
        keep(24, "restartPolicy", Ty::Str),
        unsupported(25, "restartPolicyRules"),
    ],
};

static CONTAINER_PORT: Schema = Schema {
    name: "ContainerPort",
    fields: &[
        omit(1, "name", Ty::Str),
        omit(2, "hostPort", Ty::I32),
        keep(3, "containerPort", Ty::I32),
        omit(4, "protocol", Ty::Str),
        omit(5, "hostIP", Ty::Str),
    ],
};

static ENV_VAR: Schema = Schema {
    name: "EnvVar",
    fields: &[keep(1, "name", Ty::Str), omit(2, "value", Ty::Str), keep(3, "valueFrom", Ty::Message(&ENV_VAR_SOURCE))],
};

static ENV_VAR_SOURCE: Schema = Schema {
    name: "EnvVarSource",
    fields: &[
        keep(1, "fieldRef", Ty::Message(&OBJECT_FIELD_SELECTOR)),
        keep(2, "resourceFieldRef", Ty::Message(&RESOURCE_FIELD_SELECTOR)),
        keep(3, "configMapKeyRef", Ty::Message(&CONFIG_MAP_KEY_SELECTOR)),
        keep(4, "secretKeyRef", Ty::Message(&SECRET_KEY_SELECTOR)),
        unsupported(5, "fileKeyRef"),
    ],
};

static CONFIG_MAP_KEY_SELECTOR: Schema = Schema {
    name: "ConfigMapKeySelector",
    fields: &[inline(1, &LOCAL_OBJECT_REFERENCE), keep(2, "key", Ty::Str), keep(3, "optional", Ty::Bool)],
};

static SECRET_KEY_SELECTOR: Schema = Schema {
    name: "SecretKeySelector",
    fields: &[inline(1, &LOCAL_OBJECT_REFERENCE), keep(2, "key", Ty::Str), keep(3, "optional", Ty::Bool)],
};

static OBJECT_FIELD_SELECTOR: Schema =
    Schema { name: "ObjectFieldSelector", fields: &[omit(1, "apiVersion", Ty::Str), keep(2, "fieldPath", Ty::Str)] };

static RESOURCE_FIELD_SELECTOR: Schema = Schema {
    name: "ResourceFieldSelector",
    fields: &[omit(1, "containerName", Ty::Str), keep(2, "resource", Ty::Str), omit(3, "divisor", Ty::Quantity)],
};

static ENV_FROM_SOURCE: Schema = Schema {
    name: "EnvFromSource",
    fields: &[
        omit(1, "prefix", Ty::Str),
        keep(2, "configMapRef", Ty::Message(&CONFIG_MAP_ENV_SOURCE)),
        keep(3, "secretRef", Ty::Message(&SECRET_ENV_SOURCE)),
    ],
};

static CONFIG_MAP_ENV_SOURCE: Schema =
    Schema { name: "ConfigMapEnvSource", fields: &[inline(1, &LOCAL_OBJECT_REFERENCE), keep(2, "optional", Ty::Bool)] };

static SECRET_ENV_SOURCE: Schema =
    Schema { name: "SecretEnvSource", fields: &[inline(1, &LOCAL_OBJECT_REFERENCE), keep(2, "optional", Ty::Bool)] };

static RESOURCE_REQUIREMENTS: Schema = Schema {
    name: "ResourceRequirements",
    fields: &[
        map(1, "limits", Ty::Quantity),
        map(2, "requests", Ty::Quantity),
        list(3, "claims", Ty::Message(&RESOURCE_CLAIM)),
    ],
};

static RESOURCE_CLAIM: Schema =
    Schema { name: "ResourceClaim", fields: &[keep(1, "name", Ty::Str), omit(2, "request", Ty::Str)] };

static VOLUME_MOUNT: Schema = Schema {
    name: "VolumeMount",
    fields: &[
        keep(1, "name", Ty::Str),
        omit(2, "readOnly", Ty::Bool),
        keep(3, "mountPath", Ty::Str),
        omit(4, "subPath", Ty::Str),
        keep(5, "mountPropagation", Ty::Str),
        omit(6, "subPathExpr", Ty::Str),
        keep(7, "recursiveReadOnly", Ty::Str),
        list(8, "bindMountOptions", Ty::Str),
    ],
};

static PROBE: Schema = Schema {
    name: "Probe",
    fields: &[
        inline(1, &PROBE_HANDLER),
        omit(2, "initialDelaySeconds", Ty::I32),
        omit(3, "timeoutSeconds", Ty::I32),
        omit(4, "periodSeconds", Ty::I32),
        omit(5, "successThreshold", Ty::I32),
        omit(6, "failureThreshold", Ty::I32),
        keep(7, "terminationGracePeriodSeconds", Ty::I64),
    ],
};

static PROBE_HANDLER: Schema = Schema {
    name: "ProbeHandler",
    fields: &[
        keep(1, "exec", Ty::Message(&EXEC_ACTION)),
        keep(2, "httpGet", Ty::Message(&HTTP_GET_ACTION)),
        keep(3, "tcpSocket", Ty::Message(&TCP_SOCKET_ACTION)),
        keep(4, "grpc", Ty::Message(&GRPC_ACTION)),
    ],
};

static EXEC_ACTION: Schema = Schema { name: "ExecAction", fields: &[list(1, "command", Ty::Str)] };

static HTTP_GET_ACTION: Schema = Schema {
    name: "HTTPGetAction",
    fields: &[
        omit(1, "path", Ty::Str),
        keep(2, "port", Ty::IntOrString),
        omit(3, "host", Ty::Str),
        omit(4, "scheme", Ty::Str),
        list(5, "httpHeaders", Ty::Message(&HTTP_HEADER)),
        keep(6, "protocol", Ty::Str),
    ],
};

static HTTP_HEADER: Schema =
    Schema { name: "HTTPHeader", fields: &[keep(1, "name", Ty::Str), keep(2, "value", Ty::Str)] };

static TCP_SOCKET_ACTION: Schema =
    Schema { name: "TCPSocketAction", fields: &[keep(1, "port", Ty::IntOrString), omit(2, "host", Ty::Str)] };

static GRPC_ACTION: Schema = Schema {
    name: "GRPCAction",
    fields: &[keep(1, "port", Ty::I32), keep(2, "service", Ty::Str), keep(3, "mode", Ty::Str)],
};

static TOLERATION: Schema = Schema {
    name: "Toleration",
    fields: &[
        omit(1, "key", Ty::Str),
        omit(2, "operator", Ty::Str),
        omit(3, "value", Ty::Str),
        omit(4, "effect", Ty::Str),
        keep(5, "tolerationSeconds", Ty::I64),
    ],
};

static VOLUME: Schema = Schema { name: "Volume", fields: &[keep(1, "name", Ty::Str), inline(2, &VOLUME_SOURCE)] };

static VOLUME_SOURCE: Schema = Schema {
    name: "VolumeSource",
    fields: &[
        keep(1, "hostPath", Ty::Message(&HOST_PATH_VOLUME_SOURCE)),
        keep(2, "emptyDir", Ty::Message(&EMPTY_DIR_VOLUME_SOURCE)),
        unsupported(3, "gcePersistentDisk"),
        unsupported(4, "awsElasticBlockStore"),
        unsupported(5, "gitRepo"),
        keep(6, "secret", Ty::Message(&SECRET_VOLUME_SOURCE)),
        unsupported(7, "nfs"),
        unsupported(8, "iscsi"),
        unsupported(9, "glusterfs"),
        keep(10, "persistentVolumeClaim", Ty::Message(&PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE)),
        unsupported(11, "rbd"),
        unsupported(12, "flexVolume"),
        unsupported(13, "cinder"),
        unsupported(14, "cephfs"),
        unsupported(15, "flocker"),
        unsupported(16, "downwardAPI"),
        unsupported(17, "fc"),
        unsupported(18, "azureFile"),
        keep(19, "configMap", Ty::Message(&CONFIG_MAP_VOLUME_SOURCE)),
        unsupported(20, "vsphereVolume"),
        unsupported(21, "quobyte"),
        unsupported(22, "azureDisk"),
        unsupported(23, "photonPersistentDisk"),
        unsupported(24, "portworxVolume"),
        unsupported(25, "scaleIO"),
        unsupported(26, "projected"),
        unsupported(27, "storageos"),
        unsupported(28, "csi"),
        unsupported(29, "ephemeral"),
        unsupported(30, "image"),
    ],
};

static EMPTY_DIR_VOLUME_SOURCE: Schema = Schema {
    name: "EmptyDirVolumeSource",
    fields: &[omit(1, "medium", Ty::Str), keep(2, "sizeLimit", Ty::Quantity), keep(3, "mode", Ty::I32)],
};

static CONFIG_MAP_VOLUME_SOURCE: Schema = Schema {
    name: "ConfigMapVolumeSource",
    fields: &[
        inline(1, &LOCAL_OBJECT_REFERENCE),
        list(2, "items", Ty::Message(&KEY_TO_PATH)),
        keep(3, "defaultMode", Ty::I32),
        keep(4, "optional", Ty::Bool),
        keep(5, "defaultUser", Ty::I64),
    ],
};

static SECRET_VOLUME_SOURCE: Schema = Schema {
    name: "SecretVolumeSource",
    fields: &[
        omit(1, "secretName", Ty::Str),
        list(2, "items", Ty::Message(&KEY_TO_PATH)),
        keep(3, "defaultMode", Ty::I32),
        keep(4, "optional", Ty::Bool),
        keep(5, "defaultUser", Ty::I64),
    ],
};

static KEY_TO_PATH: Schema = Schema {
    name: "KeyToPath",
    fields: &[keep(1, "key", Ty::Str), keep(2, "path", Ty::Str), keep(3, "mode", Ty::I32), keep(4, "user", Ty::I64)],
};

static HOST_PATH_VOLUME_SOURCE: Schema =
    Schema { name: "HostPathVolumeSource", fields: &[keep(1, "path", Ty::Str), keep(2, "type", Ty::Str)] };

static PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE: Schema = Schema {
    name: "PersistentVolumeClaimVolumeSource",
    fields: &[keep(1, "claimName", Ty::Str), omit(2, "readOnly", Ty::Bool)],
};

static DEPLOYMENT: Schema = Schema {
    name: "Deployment",
    fields: &[
        omit(1, "metadata", Ty::Message(&OBJECT_META)),
        omit(2, "spec", Ty::Message(&DEPLOYMENT_SPEC)),
        omit(3, "status", Ty::Message(&DEPLOYMENT_STATUS)),
    ],
};

static DEPLOYMENT_SPEC: Schema = Schema {
    name: "DeploymentSpec",
    fields: &[
        keep(1, "replicas", Ty::I32),
        keep(2, "selector", Ty::Message(&LABEL_SELECTOR)),
        keep(3, "template", Ty::Message(&POD_TEMPLATE_SPEC)),
        omit(4, "strategy", Ty::Message(&DEPLOYMENT_STRATEGY)),
        omit(5, "minReadySeconds", Ty::I32),
        keep(6, "revisionHistoryLimit", Ty::I32),
        omit(7, "paused", Ty::Bool),
        keep(9, "progressDeadlineSeconds", Ty::I32),
    ],
};

static DEPLOYMENT_STRATEGY: Schema = Schema {
    name: "DeploymentStrategy",
    fields: &[omit(1, "type", Ty::Str), keep(2, "rollingUpdate", Ty::Message(&ROLLING_UPDATE_DEPLOYMENT))],
};

static ROLLING_UPDATE_DEPLOYMENT: Schema = Schema {
    name: "RollingUpdateDeployment",
    fields: &[keep(1, "maxUnavailable", Ty::IntOrString), keep(2, "maxSurge", Ty::IntOrString)],
};

static DEPLOYMENT_STATUS: Schema = Schema {
    name: "DeploymentStatus",
    fields: &[
        omit(1, "observedGeneration", Ty::I64),
        omit(2, "replicas", Ty::I32),
        omit(3, "updatedReplicas", Ty::I32),
        omit(4, "availableReplicas", Ty::I32),
        omit(5, "unavailableReplicas", Ty::I32),
        list(6, "conditions", Ty::Message(&DEPLOYMENT_CONDITION)),
        omit(7, "readyReplicas", Ty::I32),
        keep(8, "collisionCount", Ty::I32),
        keep(9, "terminatingReplicas", Ty::I32),
    ],
};

static DEPLOYMENT_CONDITION: Schema = Schema {
    name: "DeploymentCondition",
    fields: &[
        keep(1, "type", Ty::Str),
        keep(2, "status", Ty::Str),
        omit(4, "reason", Ty::Str),
        omit(5, "message", Ty::Str),
        omit(6, "lastUpdateTime", Ty::Time),
        omit(7, "lastTransitionTime", Ty::Time),
    ],
};

#[cfg(test)]
mod tests {
    //! Bodies are built the way kubectl's gogo-protobuf code writes them: the envelope with empty
    //! `contentEncoding`/`contentType`, and every non-pointer Go field present even when empty
    //! (`Some(String::new())`, `Some(0)`, empty messages), so the tests see the zero values the
    //! decoder has to drop. The structs are a second transcription of generated.proto, separate
    //! from the decoder's tables.

    use std::collections::BTreeMap;

    use axum::http::HeaderMap;
    use axum::http::header;
    use serde_json::json;

    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct ObjectMeta {
        #[prost(string, optional, tag = "1")]
        name: Option<String>,
        #[prost(string, optional, tag = "2")]
        generate_name: Option<String>,
        #[prost(string, optional, tag = "3")]
        namespace: Option<String>,
        #[prost(string, optional, tag = "6")]
        resource_version: Option<String>,
        #[prost(int64, optional, tag = "7")]
        generation: Option<i64>,
        #[prost(message, optional, tag = "8")]
        creation_timestamp: Option<Time>,
        #[prost(btree_map = "string, string", tag = "11")]
        labels: BTreeMap<String, String>,
        #[prost(btree_map = "string, string", tag = "12")]
        annotations: BTreeMap<String, String>,
        #[prost(message, repeated, tag = "13")]
        owner_references: Vec<OwnerReference>,
        #[prost(string, repeated, tag = "14")]
        finalizers: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Time {
        #[prost(int64, optional, tag = "1")]
        seconds: Option<i64>,
        #[prost(int32, optional, tag = "2")]
        nanos: Option<i32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct OwnerReference {
        #[prost(string, optional, tag = "1")]
        kind: Option<String>,
        #[prost(string, optional, tag = "3")]
        name: Option<String>,
        #[prost(string, optional, tag = "4")]
        uid: Option<String>,
        #[prost(string, optional, tag = "5")]
        api_version: Option<String>,
        #[prost(bool, optional, tag = "6")]
        controller: Option<bool>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct LabelSelector {
        #[prost(btree_map = "string, string", tag = "1")]
        match_labels: BTreeMap<String, String>,
        #[prost(message, repeated, tag = "2")]
        match_expressions: Vec<LabelSelectorRequirement>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct LabelSelectorRequirement {
        #[prost(string, optional, tag = "1")]
        key: Option<String>,
        #[prost(string, optional, tag = "2")]
        operator: Option<String>,
        #[prost(string, repeated, tag = "3")]
        values: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct IntOrString {
        #[prost(int64, optional, tag = "1")]
        r#type: Option<i64>,
        #[prost(int32, optional, tag = "2")]
        int_val: Option<i32>,
        #[prost(string, optional, tag = "3")]
        str_val: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Quantity {
        #[prost(string, optional, tag = "1")]
        string: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Deployment {
        #[prost(message, optional, tag = "1")]
        metadata: Option<ObjectMeta>,
        #[prost(message, optional, tag = "2")]
        spec: Option<DeploymentSpec>,
        #[prost(message, optional, tag = "3")]
        status: Option<DeploymentStatus>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct DeploymentSpec {
        #[prost(int32, optional, tag = "1")]
        replicas: Option<i32>,
        #[prost(message, optional, tag = "2")]
        selector: Option<LabelSelector>,
        #[prost(message, optional, tag = "3")]
        template: Option<PodTemplateSpec>,
        #[prost(message, optional, tag = "4")]
        strategy: Option<DeploymentStrategy>,
        #[prost(int32, optional, tag = "5")]
        min_ready_seconds: Option<i32>,
        #[prost(int32, optional, tag = "6")]
        revision_history_limit: Option<i32>,
        #[prost(bool, optional, tag = "7")]
        paused: Option<bool>,
        #[prost(int32, optional, tag = "9")]
        progress_deadline_seconds: Option<i32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct DeploymentStrategy {
        #[prost(string, optional, tag = "1")]
        r#type: Option<String>,
        #[prost(message, optional, tag = "2")]
        rolling_update: Option<RollingUpdateDeployment>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct RollingUpdateDeployment {
        #[prost(message, optional, tag = "1")]
        max_unavailable: Option<IntOrString>,
        #[prost(message, optional, tag = "2")]
        max_surge: Option<IntOrString>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct DeploymentStatus {
        #[prost(int64, optional, tag = "1")]
        observed_generation: Option<i64>,
        #[prost(int32, optional, tag = "2")]
        replicas: Option<i32>,
        #[prost(int32, optional, tag = "7")]
        ready_replicas: Option<i32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct PodTemplateSpec {
        #[prost(message, optional, tag = "1")]
        metadata: Option<ObjectMeta>,
        #[prost(message, optional, tag = "2")]
        spec: Option<PodSpec>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct PodSpec {
        #[prost(message, repeated, tag = "2")]
        containers: Vec<Container>,
        #[prost(string, optional, tag = "3")]
        restart_policy: Option<String>,
        #[prost(int64, optional, tag = "4")]
        termination_grace_period_seconds: Option<i64>,
        #[prost(string, optional, tag = "6")]
        dns_policy: Option<String>,
        #[prost(bool, optional, tag = "11")]
        host_network: Option<bool>,
        /// `Affinity`, which has no table: raw bytes stand in for it.
        #[prost(bytes = "vec", optional, tag = "18")]
        affinity: Option<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Container {
        #[prost(string, optional, tag = "1")]
        name: Option<String>,
        #[prost(string, optional, tag = "2")]
        image: Option<String>,
        #[prost(string, repeated, tag = "3")]
        command: Vec<String>,
        #[prost(string, repeated, tag = "4")]
        args: Vec<String>,
        #[prost(message, repeated, tag = "6")]
        ports: Vec<ContainerPort>,
        #[prost(message, repeated, tag = "7")]
        env: Vec<EnvVar>,
        #[prost(message, optional, tag = "8")]
        resources: Option<ResourceRequirements>,
        #[prost(string, optional, tag = "13")]
        termination_message_path: Option<String>,
        #[prost(string, optional, tag = "14")]
        image_pull_policy: Option<String>,
        #[prost(bool, optional, tag = "16")]
        stdin: Option<bool>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ContainerPort {
        #[prost(string, optional, tag = "1")]
        name: Option<String>,
        #[prost(int32, optional, tag = "2")]
        host_port: Option<i32>,
        #[prost(int32, optional, tag = "3")]
        container_port: Option<i32>,
        #[prost(string, optional, tag = "4")]
        protocol: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct EnvVar {
        #[prost(string, optional, tag = "1")]
        name: Option<String>,
        #[prost(string, optional, tag = "2")]
        value: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ResourceRequirements {
        #[prost(btree_map = "string, message", tag = "1")]
        limits: BTreeMap<String, Quantity>,
        #[prost(btree_map = "string, message", tag = "2")]
        requests: BTreeMap<String, Quantity>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Pod {
        #[prost(message, optional, tag = "1")]
        metadata: Option<ObjectMeta>,
        #[prost(message, optional, tag = "2")]
        spec: Option<PodSpec>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Namespace {
        #[prost(message, optional, tag = "1")]
        metadata: Option<ObjectMeta>,
        #[prost(message, optional, tag = "2")]
        spec: Option<NamespaceSpec>,
        #[prost(message, optional, tag = "3")]
        status: Option<NamespaceStatus>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct NamespaceSpec {
        #[prost(string, repeated, tag = "1")]
        finalizers: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct NamespaceStatus {
        #[prost(string, optional, tag = "1")]
        phase: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ConfigMap {
        #[prost(message, optional, tag = "1")]
        metadata: Option<ObjectMeta>,
        #[prost(btree_map = "string, string", tag = "2")]
        data: BTreeMap<String, String>,
        #[prost(btree_map = "string, bytes", tag = "3")]
        binary_data: BTreeMap<String, Vec<u8>>,
        #[prost(bool, optional, tag = "4")]
        immutable: Option<bool>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Secret {
        #[prost(message, optional, tag = "1")]
        metadata: Option<ObjectMeta>,
        #[prost(btree_map = "string, bytes", tag = "2")]
        data: BTreeMap<String, Vec<u8>>,
        #[prost(string, optional, tag = "3")]
        r#type: Option<String>,
        #[prost(btree_map = "string, string", tag = "4")]
        string_data: BTreeMap<String, String>,
        #[prost(bool, optional, tag = "5")]
        immutable: Option<bool>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Service {
        #[prost(message, optional, tag = "1")]
        metadata: Option<ObjectMeta>,
        #[prost(message, optional, tag = "2")]
        spec: Option<ServiceSpec>,
        #[prost(message, optional, tag = "3")]
        status: Option<ServiceStatus>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ServiceSpec {
        #[prost(message, repeated, tag = "1")]
        ports: Vec<ServicePort>,
        #[prost(btree_map = "string, string", tag = "2")]
        selector: BTreeMap<String, String>,
        #[prost(string, optional, tag = "3")]
        cluster_ip: Option<String>,
        #[prost(string, optional, tag = "4")]
        r#type: Option<String>,
        #[prost(string, optional, tag = "7")]
        session_affinity: Option<String>,
        #[prost(string, optional, tag = "10")]
        external_name: Option<String>,
        #[prost(int32, optional, tag = "12")]
        health_check_node_port: Option<i32>,
        #[prost(string, optional, tag = "17")]
        ip_family_policy: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ServicePort {
        #[prost(string, optional, tag = "1")]
        name: Option<String>,
        #[prost(string, optional, tag = "2")]
        protocol: Option<String>,
        #[prost(int32, optional, tag = "3")]
        port: Option<i32>,
        #[prost(message, optional, tag = "4")]
        target_port: Option<IntOrString>,
        #[prost(int32, optional, tag = "5")]
        node_port: Option<i32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ServiceStatus {
        #[prost(message, optional, tag = "1")]
        load_balancer: Option<LoadBalancerStatus>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct LoadBalancerStatus {}

    #[derive(Clone, PartialEq, prost::Message)]
    struct ServiceAccount {
        #[prost(message, optional, tag = "1")]
        metadata: Option<ObjectMeta>,
        #[prost(message, repeated, tag = "2")]
        secrets: Vec<ObjectReference>,
        #[prost(message, repeated, tag = "3")]
        image_pull_secrets: Vec<LocalObjectReference>,
        #[prost(bool, optional, tag = "4")]
        automount_service_account_token: Option<bool>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ObjectReference {
        #[prost(string, optional, tag = "1")]
        kind: Option<String>,
        #[prost(string, optional, tag = "2")]
        namespace: Option<String>,
        #[prost(string, optional, tag = "3")]
        name: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct LocalObjectReference {
        #[prost(string, optional, tag = "1")]
        name: Option<String>,
    }

    /// A body as kubectl sends it: magic, then the envelope around the encoded object.
    fn body(api_version: &str, kind: &str, object: &impl prost::Message) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
            raw: Some(object.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    fn s(value: &str) -> Option<String> {
        Some(value.to_string())
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Metadata as gogo writes it for a new object: every string present, the zero time an
    /// empty message.
    fn meta(name: &str, pairs: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: s(name),
            generate_name: s(""),
            namespace: s(""),
            resource_version: s(""),
            generation: Some(0),
            creation_timestamp: Some(Time::default()),
            labels: labels(pairs),
            ..Default::default()
        }
    }

    fn int(value: i32) -> Option<IntOrString> {
        Some(IntOrString { r#type: Some(0), int_val: Some(value), str_val: s("") })
    }

    fn string(value: &str) -> Option<IntOrString> {
        Some(IntOrString { r#type: Some(1), int_val: Some(0), str_val: s(value) })
    }

    /// A container as `kubectl create deployment --image=nginx` builds it.
    fn nginx() -> Container {
        Container {
            name: s("nginx"),
            image: s("nginx"),
            resources: Some(ResourceRequirements::default()),
            termination_message_path: s(""),
            image_pull_policy: s(""),
            stdin: Some(false),
            ..Default::default()
        }
    }

    fn deployment(replicas: i32, container: Container) -> Deployment {
        Deployment {
            metadata: Some(meta("web", &[("app", "web")])),
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: Some(LabelSelector { match_labels: labels(&[("app", "web")]), ..Default::default() }),
                template: Some(PodTemplateSpec {
                    metadata: Some(meta("", &[("app", "web")])),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        restart_policy: s(""),
                        dns_policy: s(""),
                        host_network: Some(false),
                        ..Default::default()
                    }),
                }),
                strategy: Some(DeploymentStrategy { r#type: s(""), rolling_update: None }),
                min_ready_seconds: Some(0),
                paused: Some(false),
                ..Default::default()
            }),
            status: Some(DeploymentStatus { observed_generation: Some(0), replicas: Some(0), ready_replicas: Some(0) }),
        }
    }

    #[test]
    fn a_kubectl_create_deployment_decodes_to_its_json() {
        let decoded = decode(&body("apps/v1", "Deployment", &deployment(2, nginx()))).expect("deployment");
        assert_eq!(
            decoded,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]},
                    },
                    "strategy": {},
                },
                "status": {},
            })
        );
    }

    #[test]
    fn pointer_zeros_stay_and_every_deployment_field_decodes() {
        let container = Container {
            command: vec!["sh".into(), "-c".into()],
            args: vec!["sleep 1".into()],
            ports: vec![ContainerPort {
                name: s(""),
                host_port: Some(0),
                container_port: Some(80),
                protocol: s("TCP"),
            }],
            env: vec![EnvVar { name: s("A"), value: s("1") }, EnvVar { name: s("EMPTY"), value: s("") }],
            resources: Some(ResourceRequirements {
                limits: [("cpu".to_string(), Quantity { string: s("500m") })].into(),
                requests: [("memory".to_string(), Quantity { string: s("64Mi") })].into(),
            }),
            image_pull_policy: s("IfNotPresent"),
            ..nginx()
        };
        let mut object = deployment(0, container);
        let meta = object.metadata.as_mut().expect("metadata");
        meta.namespace = s("team");
        meta.creation_timestamp = Some(Time { seconds: Some(1_700_000_000), nanos: Some(5) });
        meta.annotations = labels(&[("note", "x")]);
        meta.finalizers = vec!["example.com/hold".into()];
        meta.owner_references = vec![OwnerReference {
            kind: s("Thing"),
            name: s("owner"),
            uid: s("u-1"),
            api_version: s("example.com/v1"),
            controller: Some(true),
        }];
        let spec = object.spec.as_mut().expect("spec");
        spec.selector.as_mut().expect("selector").match_expressions =
            vec![LabelSelectorRequirement { key: s("tier"), operator: s("In"), values: vec!["a".into(), "b".into()] }];
        spec.strategy = Some(DeploymentStrategy {
            r#type: s("RollingUpdate"),
            rolling_update: Some(RollingUpdateDeployment { max_unavailable: int(0), max_surge: string("25%") }),
        });
        spec.revision_history_limit = Some(0);
        spec.progress_deadline_seconds = Some(600);
        spec.paused = Some(true);
        spec.min_ready_seconds = Some(5);
        let decoded = decode(&body("apps/v1", "Deployment", &object)).expect("deployment");
        assert_eq!(
            decoded["metadata"],
            json!({
                "name": "web",
                "namespace": "team",
                "creationTimestamp": "2023-11-14T22:13:20Z",
                "labels": {"app": "web"},
                "annotations": {"note": "x"},
                "finalizers": ["example.com/hold"],
                "ownerReferences": [{
                    "apiVersion": "example.com/v1", "kind": "Thing", "name": "owner", "uid": "u-1", "controller": true,
                }],
            })
        );
        let spec = &decoded["spec"];
        assert_eq!(spec["replicas"], json!(0), "a pointer's zero is set, not unset");
        assert_eq!(spec["revisionHistoryLimit"], json!(0));
        assert_eq!(spec["progressDeadlineSeconds"], json!(600));
        assert_eq!(spec["paused"], json!(true));
        assert_eq!(spec["minReadySeconds"], json!(5));
        assert_eq!(
            spec["selector"],
            json!({
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
            })
        );
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}})
        );
        assert_eq!(
            spec["template"]["spec"]["containers"][0],
            json!({
                "name": "nginx",
                "image": "nginx",
                "command": ["sh", "-c"],
                "args": ["sleep 1"],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "1"}, {"name": "EMPTY"}],
                "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}},
                "imagePullPolicy": "IfNotPresent",
            })
        );
    }

    #[test]
    fn secret_bytes_come_out_base64() {
        let secret = Secret {
            metadata: Some(meta("s", &[])),
            data: [("a".to_string(), b"b".to_vec()), ("bin".to_string(), vec![0xff, 0x00])].into(),
            r#type: s("Opaque"),
            string_data: labels(&[("plain", "text")]),
            immutable: Some(false),
        };
        assert_eq!(
            decode(&body("v1", "Secret", &secret)).expect("secret"),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s"},
                "data": {"a": "Yg==", "bin": "/wA="},
                "stringData": {"plain": "text"},
                "type": "Opaque",
                "immutable": false,
            })
        );
        let empty_type = Secret { r#type: s(""), immutable: None, ..secret };
        let decoded = decode(&body("v1", "Secret", &empty_type)).expect("secret");
        assert_eq!((decoded.get("type"), decoded.get("immutable")), (None, None));
    }

    #[test]
    fn config_maps_decode_data_binary_data_and_immutable() {
        let config_map = ConfigMap {
            metadata: Some(meta("c", &[])),
            data: labels(&[("a", "b"), ("empty", "")]),
            binary_data: [("raw".to_string(), vec![1, 2, 3])].into(),
            immutable: Some(true),
        };
        assert_eq!(
            decode(&body("v1", "ConfigMap", &config_map)).expect("config map"),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "c"},
                "data": {"a": "b", "empty": ""},
                "binaryData": {"raw": "AQID"},
                "immutable": true,
            })
        );
    }

    #[test]
    fn service_target_ports_are_ints_or_strings_and_unset_ones_are_left_out() {
        let port = |name: &str, port: i32, target: Option<IntOrString>| ServicePort {
            name: s(name),
            protocol: s("TCP"),
            port: Some(port),
            target_port: target,
            node_port: Some(0),
        };
        let service = Service {
            metadata: Some(meta("web", &[("app", "web")])),
            spec: Some(ServiceSpec {
                ports: vec![port("80-8080", 80, int(8080)), port("https", 443, string("https")), port("", 53, int(0))],
                selector: labels(&[("app", "web")]),
                cluster_ip: s(""),
                r#type: s("ClusterIP"),
                session_affinity: s(""),
                external_name: s(""),
                health_check_node_port: Some(0),
                ip_family_policy: None,
            }),
            status: Some(ServiceStatus { load_balancer: Some(LoadBalancerStatus {}) }),
        };
        assert_eq!(
            decode(&body("v1", "Service", &service)).expect("service"),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "ports": [
                        {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                        {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "https"},
                        {"protocol": "TCP", "port": 53},
                    ],
                    "selector": {"app": "web"},
                    "type": "ClusterIP",
                },
                "status": {"loadBalancer": {}},
            })
        );
        let external = Service {
            spec: Some(ServiceSpec {
                r#type: s("ExternalName"),
                external_name: s("example.com"),
                session_affinity: s("None"),
                cluster_ip: s("None"),
                ip_family_policy: s(""),
                ..Default::default()
            }),
            ..service
        };
        let decoded = decode(&body("v1", "Service", &external)).expect("service");
        assert_eq!(
            decoded["spec"],
            json!({
                "type": "ExternalName",
                "externalName": "example.com",
                "sessionAffinity": "None",
                "clusterIP": "None",
                "ipFamilyPolicy": "",
            }),
            "a pointer to an empty string is still set"
        );
    }

    #[test]
    fn namespaces_and_service_accounts_decode() {
        let namespace = Namespace {
            metadata: Some(meta("team", &[])),
            spec: Some(NamespaceSpec::default()),
            status: Some(NamespaceStatus { phase: s("") }),
        };
        assert_eq!(
            decode(&body("v1", "Namespace", &namespace)).expect("namespace"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}, "spec": {}, "status": {}})
        );
        let account = ServiceAccount {
            metadata: Some(meta("robot", &[])),
            secrets: vec![ObjectReference { kind: s(""), namespace: s(""), name: s("token") }],
            image_pull_secrets: vec![LocalObjectReference { name: s("registry") }],
            automount_service_account_token: Some(false),
        };
        assert_eq!(
            decode(&body("v1", "ServiceAccount", &account)).expect("service account"),
            json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "robot"},
                "secrets": [{"name": "token"}],
                "imagePullSecrets": [{"name": "registry"}],
                "automountServiceAccountToken": false,
            })
        );
    }

    #[test]
    fn pods_decode_with_the_deployment_pod_spec() {
        let pod = Pod {
            metadata: Some(meta("p", &[("run", "p")])),
            spec: Some(PodSpec {
                containers: vec![nginx()],
                restart_policy: s("Never"),
                termination_grace_period_seconds: Some(0),
                dns_policy: s(""),
                host_network: Some(false),
                affinity: None,
            }),
        };
        assert_eq!(
            decode(&body("v1", "Pod", &pod)).expect("pod"),
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "labels": {"run": "p"}},
                "spec": {
                    "containers": [{"name": "nginx", "image": "nginx", "resources": {}}],
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 0,
                },
            })
        );
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics() {
        let full = body("apps/v1", "Deployment", &deployment(2, nginx()));
        for len in 0..full.len() {
            // Some prefixes end on a field boundary of the envelope and decode; none may panic.
            let _ = decode(&full[..len]);
        }
        let error = decode(&full[..full.len() - 3]).expect_err("truncated");
        assert!(matches!(error, ProtobufError::Malformed { .. }), "{error}");
        assert!(!error.is_unsupported());
        // A truncated object inside a well-formed envelope is caught by the tables' walker.
        let raw = deployment(2, nginx()).encode_to_vec();
        let unknown = Unknown {
            type_meta: Some(TypeMeta { api_version: s("apps/v1"), kind: s("Deployment") }),
            raw: Some(raw[..raw.len() - 5].to_vec()),
            ..Default::default()
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        let error = decode(&body).expect_err("truncated object");
        assert!(matches!(error, ProtobufError::Malformed { .. }), "{error}");
    }

    #[test]
    fn wrong_magic_and_empty_bodies_are_errors() {
        let mut body = body("v1", "Namespace", &Namespace { metadata: Some(meta("x", &[])), ..Default::default() });
        body[0] = b'K';
        assert!(matches!(decode(&body), Err(ProtobufError::NotProtobuf)));
        assert!(matches!(decode(b"{\"kind\":\"Namespace\"}"), Err(ProtobufError::NotProtobuf)));
        assert!(matches!(decode(b""), Err(ProtobufError::NotProtobuf)));
        assert!(matches!(decode(&MAGIC), Err(ProtobufError::Empty)));
        let nameless = [MAGIC.to_vec(), Unknown { raw: Some(vec![]), ..Default::default() }.encode_to_vec()].concat();
        assert!(matches!(decode(&nameless), Err(ProtobufError::MissingKind)));
    }

    #[test]
    fn other_kinds_and_fields_without_tables_point_at_json() {
        let error = decode(&body("batch/v1", "Job", &Namespace::default())).expect_err("job");
        assert!(error.is_unsupported());
        let message = error.to_string();
        assert!(message.contains("Job (batch/v1) is not supported over protobuf"), "{message}");
        assert!(message.contains("kubectl apply -f -"), "{message}");

        // An empty message in a field without a table is its zero value and harmless...
        let mut object = deployment(1, nginx());
        fn pod_spec(d: &mut Deployment) -> &mut PodSpec {
            d.spec.as_mut().and_then(|s| s.template.as_mut()).and_then(|t| t.spec.as_mut()).expect("pod spec")
        }
        pod_spec(&mut object).affinity = Some(vec![]);
        decode(&body("apps/v1", "Deployment", &object)).expect("empty affinity");
        // ...but anything in it would be lost, so it is refused.
        pod_spec(&mut object).affinity = Some(vec![0x0a, 0x00]);
        let error = decode(&body("apps/v1", "Deployment", &object)).expect_err("affinity");
        assert!(matches!(error, ProtobufError::UnsupportedField { message: "PodSpec", field: "affinity", number: 18 }));
        assert!(error.to_string().contains("PodSpec field 18 (affinity)"), "{error}");
    }

    #[test]
    fn decode_body_accepts_protobuf_and_maps_errors_to_statuses() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, MEDIA_TYPE.parse().expect("header"));
        let namespace = Namespace { metadata: Some(meta("team", &[])), ..Default::default() };
        let decoded = crate::rest::decode_body(&headers, &body("v1", "Namespace", &namespace)).expect("namespace");
        assert_eq!(decoded["metadata"]["name"], json!("team"));
        let failure = crate::rest::decode_body(&headers, &body("batch/v1", "Job", &namespace)).expect_err("job");
        assert_eq!((failure.code, failure.reason), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType"));
        let failure = crate::rest::decode_body(&headers, b"not protobuf").expect_err("garbage");
        assert_eq!(failure.code, StatusCode::BAD_REQUEST);
    }
}
