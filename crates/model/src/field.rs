//! Field-level validation errors, as Kubernetes reports them in a 422 `Invalid` Status's
//! `details.causes`.

use serde::Serialize;

/// Why a field was refused: the `reason` of a Status cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// A required field is missing ("Required value").
    FieldValueRequired,
    /// A field's value is malformed or out of range ("Invalid value: ...").
    FieldValueInvalid,
    /// A value outside an enumeration ("Unsupported value: ...").
    FieldValueNotSupported,
    /// Two list entries share a key ("Duplicate value: ...").
    FieldValueDuplicate,
    /// A field that may not be set or changed ("Forbidden: ...").
    FieldValueForbidden,
    /// A value longer than allowed ("Too long: ...").
    FieldValueTooLong,
}

/// One refused field: `field` is the JSON path as Kubernetes writes it
/// (`spec.template.spec.containers[0].image`), `message` what `kubectl` prints after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Why.
    pub reason: Reason,
    /// The path of the field.
    pub field: String,
    /// The text after the path, e.g. `Required value` or `Invalid value: "Foo": must be lower case`.
    pub message: String,
}

impl FieldError {
    /// `field: Required value`.
    pub fn required(field: impl Into<String>) -> FieldError {
        FieldError { reason: Reason::FieldValueRequired, field: field.into(), message: "Required value".into() }
    }

    /// `field: Invalid value: <value>: <detail>`; `value` is shown as JSON.
    pub fn invalid(field: impl Into<String>, value: impl Serialize, detail: impl AsRef<str>) -> FieldError {
        let shown = serde_json::to_string(&value).unwrap_or_default();
        FieldError {
            reason: Reason::FieldValueInvalid,
            field: field.into(),
            message: format!("Invalid value: {shown}: {}", detail.as_ref()),
        }
    }

    /// `field: Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: impl Serialize, supported: &[&str]) -> FieldError {
        let shown = serde_json::to_string(&value).unwrap_or_default();
        let list = supported.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
        FieldError {
            reason: Reason::FieldValueNotSupported,
            field: field.into(),
            message: format!("Unsupported value: {shown}: supported values: {list}"),
        }
    }

    /// `field: Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: impl Serialize) -> FieldError {
        let shown = serde_json::to_string(&value).unwrap_or_default();
        FieldError {
            reason: Reason::FieldValueDuplicate,
            field: field.into(),
            message: format!("Duplicate value: {shown}"),
        }
    }

    /// `field: Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: impl AsRef<str>) -> FieldError {
        FieldError {
            reason: Reason::FieldValueForbidden,
            field: field.into(),
            message: format!("Forbidden: {}", detail.as_ref()),
        }
    }

    /// `field: Too long: may not be more than <max> bytes`.
    pub fn too_long(field: impl Into<String>, max: usize) -> FieldError {
        FieldError {
            reason: Reason::FieldValueTooLong,
            field: field.into(),
            message: format!("Too long: may not be more than {max} bytes"),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
