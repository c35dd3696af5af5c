//! Attribute maps: which attributes a resource accepts on create and update, their types,
//! conversions and defaults — the equivalent of neutron-lib's `RESOURCE_ATTRIBUTE_MAP`.
//!
//! Requests are checked here before any service logic: unknown attributes, attributes not
//! allowed in POST/PUT, missing required ones and ill-typed values all give 400 with Neutron's
//! messages. Values are normalised (booleans from "True"/"false", integers from strings).
//! String attributes refuse control characters: free text (descriptions, user data) may hold
//! tab and line breaks, every other string is one line (see `common::check_line`).
//! This module is pure; it must never consult the store or policy.

use serde_json::{Map, Value};

use neutrino_core::db::Obj;
use neutrino_core::{ApiError, ApiResult};

/// How an attribute's value is checked and converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// String up to N characters.
    Str(usize),
    /// String up to N characters, or null.
    StrOrNull(usize),
    /// Boolean (accepts "true"/"false" in any case, and 0/1).
    Bool,
    /// UUID string.
    Uuid,
    /// UUID string or null.
    UuidOrNull,
    /// Integer (accepts numeric strings).
    Int,
    /// Integer or null.
    IntOrNull,
    /// List (items checked by the service).
    List,
    /// Object (checked by the service).
    Dict,
    /// Anything (checked by the service).
    Any,
}

/// Default applied on create when the attribute is absent.
#[derive(Debug, Clone, Copy)]
pub enum Default {
    /// The attribute must be given.
    Required,
    /// Absent stays absent (the service fills it).
    None,
    /// JSON null.
    Null,
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(&'static str),
    /// An integer.
    Int(i64),
    /// An empty list.
    EmptyList,
    /// An empty object.
    EmptyDict,
}

/// One attribute of a resource.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    /// Attribute name as on the wire.
    pub name: &'static str,
    /// Accepted on create.
    pub post: bool,
    /// Accepted on update.
    pub put: bool,
    /// Type and conversion.
    pub ty: Ty,
    /// Default on create.
    pub default: Default,
}

/// Shorthand constructor.
pub const fn attr(name: &'static str, post: bool, put: bool, ty: Ty, default: Default) -> Attr {
    Attr {
        name,
        post,
        put,
        ty,
        default,
    }
}

/// Standard attributes every resource accepts (name/description/project).
pub const STANDARD: &[Attr] = &[
    attr("name", true, true, Ty::Str(255), Default::Str("")),
    attr("description", true, true, Ty::Str(255), Default::Str("")),
    attr("project_id", true, false, Ty::Str(255), Default::None),
    attr("tenant_id", true, false, Ty::Str(255), Default::None),
];

/// Read-only attributes clients may echo back; they are refused with a clear message.
const READ_ONLY: &[&str] = &[
    "id",
    "created_at",
    "updated_at",
    "revision_number",
    "status",
    "tags",
];

fn bad_value(attr: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Invalid input for {attr}. Reason: {reason}."))
}

/// Converts a boolean the way neutron-lib's `convert_to_boolean` does (oslo's strict
/// `bool_from_string`): booleans, and values whose text is `1`/`0`, `true`/`false`,
/// `t`/`f`, `yes`/`no`, `y`/`n` or `on`/`off` in any case, spaces around ignored. A failed
/// conversion is `InvalidInput` ("Invalid input for operation: ..."), as there: Neutron's
/// `convert_to` functions raise it directly, unlike its validators. `_name` is the attribute,
/// which Neutron's message does not name.
pub fn to_bool(_name: &str, v: &Value) -> ApiResult<bool> {
    let text = match v {
        Value::Bool(b) => return Ok(*b),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    match text.as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Ok(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Ok(false),
        _ => Err(ApiError::invalid_input(format_args!(
            "'{}' cannot be converted to boolean",
            display(v)
        ))),
    }
}

/// Whether `s` is a canonical UUID (hyphenated or plain hex).
pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok()
}

/// Attributes holding free text, which may span lines (see `common::check_text`); every
/// other string attribute is one line (`common::check_line`).
const FREE_TEXT: &[&str] = &["description", "user_data"];

fn check_value(a: &Attr, v: Value) -> ApiResult<Value> {
    let name = a.name;
    let str_check = |v: &Value, max: usize| -> ApiResult<()> {
        let Value::String(s) = v else {
            return Err(bad_value(name, format!("'{v}' is not a valid string")));
        };
        if FREE_TEXT.contains(&name) {
            crate::common::check_text(name, s)?;
        } else {
            crate::common::check_line(name, s)?;
        }
        if s.chars().count() <= max {
            Ok(())
        } else {
            Err(bad_value(
                name,
                format!("'{s}' exceeds maximum length of {max}"),
            ))
        }
    };
    match a.ty {
        Ty::Str(max) => str_check(&v, max).map(|_| v),
        Ty::StrOrNull(max) => {
            if v.is_null() {
                Ok(v)
            } else {
                str_check(&v, max).map(|_| v)
            }
        }
        Ty::Bool => to_bool(name, &v).map(Value::Bool),
        Ty::Uuid | Ty::UuidOrNull => match &v {
            Value::Null if a.ty == Ty::UuidOrNull => Ok(v),
            Value::String(s) if is_uuid(s) => Ok(v),
            other => Err(bad_value(
                name,
                format!("'{}' is not a valid UUID", display(other)),
            )),
        },
        Ty::Int | Ty::IntOrNull => match &v {
            Value::Null if a.ty == Ty::IntOrNull => Ok(v),
            Value::Number(n) if n.is_i64() => Ok(v),
            // neutron-lib's convert_to_int: InvalidInput, like booleans.
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| ApiError::invalid_input(format_args!("'{s}' is not an integer"))),
            other => Err(ApiError::invalid_input(format_args!(
                "'{}' is not an integer",
                display(other)
            ))),
        },
        Ty::List => match &v {
            Value::Array(_) => Ok(v),
            other => Err(bad_value(
                name,
                format!("'{}' is not a list", display(other)),
            )),
        },
        Ty::Dict => match &v {
            Value::Object(_) => Ok(v),
            other => Err(bad_value(
                name,
                format!("'{}' is not a dictionary", display(other)),
            )),
        },
        Ty::Any => Ok(v),
    }
}

/// Renders a value as Neutron quotes it in messages (strings without JSON quotes).
pub fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

fn find<'a>(specs: &[&'a [Attr]], name: &str) -> Option<&'a Attr> {
    specs.iter().flat_map(|s| s.iter()).find(|a| a.name == name)
}

fn unknown_error(mut names: Vec<String>) -> ApiError {
    names.sort();
    ApiError::bad_request(format!("Unrecognized attribute(s) '{}'", names.join(", ")))
}

/// Validates a create request against `specs` (checked in order), applies defaults, and
/// reconciles `project_id`/`tenant_id` into `project_id` (not yet defaulted to the caller).
pub fn prepare_create(specs: &[&[Attr]], input: Obj) -> ApiResult<Obj> {
    let mut out = Map::new();
    let mut unknown = Vec::new();
    for (k, v) in input {
        match find(specs, &k) {
            Some(a) if a.post => {
                out.insert(k, check_value(a, v)?);
            }
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "Attribute '{k}' not allowed in POST"
                )));
            }
            None if READ_ONLY.contains(&k.as_str()) => {
                return Err(ApiError::bad_request(format!(
                    "Attribute '{k}' not allowed in POST"
                )));
            }
            None => unknown.push(k),
        }
    }
    if !unknown.is_empty() {
        return Err(unknown_error(unknown));
    }
    for a in specs.iter().flat_map(|s| s.iter()) {
        if out.contains_key(a.name) || !a.post {
            continue;
        }
        let v = match a.default {
            Default::Required => {
                return Err(ApiError::bad_request(format!(
                    "Failed to parse request. Required attribute '{}' not specified",
                    a.name
                )));
            }
            Default::None => continue,
            Default::Null => Value::Null,
            Default::Bool(b) => Value::Bool(b),
            Default::Str(s) => Value::String(s.into()),
            Default::Int(i) => Value::from(i),
            Default::EmptyList => Value::Array(vec![]),
            Default::EmptyDict => Value::Object(Map::new()),
        };
        out.insert(a.name.to_string(), v);
    }
    match (out.remove("project_id"), out.remove("tenant_id")) {
        (Some(p), Some(t)) if p != t => {
            return Err(ApiError::bad_request(
                "Specifying 'project_id' or 'tenant_id' with different values is not allowed",
            ));
        }
        (Some(p), _) | (None, Some(p)) => {
            out.insert("project_id".into(), p);
        }
        (None, None) => {}
    }
    Ok(out)
}

/// Validates an update request against `specs`: only attributes allowed in PUT, typed.
pub fn prepare_update(specs: &[&[Attr]], input: Obj) -> ApiResult<Obj> {
    let mut out = Map::new();
    let mut unknown = Vec::new();
    for (k, v) in input {
        match find(specs, &k) {
            Some(a) if a.put => {
                out.insert(k, check_value(a, v)?);
            }
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "Cannot update read-only attribute {k}"
                )));
            }
            None if READ_ONLY.contains(&k.as_str()) => {
                return Err(ApiError::bad_request(format!(
                    "Cannot update read-only attribute {k}"
                )));
            }
            None => unknown.push(k),
        }
    }
    if !unknown.is_empty() {
        return Err(unknown_error(unknown));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: &[Attr] = &[
        attr("admin_state_up", true, true, Ty::Bool, Default::Bool(true)),
        attr("network_id", true, false, Ty::Uuid, Default::Required),
        attr("mtu", true, true, Ty::Int, Default::None),
    ];

    fn o(v: Value) -> Obj {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_conversion_and_required() {
        let id = uuid::Uuid::new_v4().to_string();
        let r = prepare_create(
            &[STANDARD, SPEC],
            o(json!({"network_id": id, "admin_state_up": "False", "mtu": "1400"})),
        )
        .unwrap();
        assert_eq!(r["admin_state_up"], json!(false));
        assert_eq!(r["mtu"], json!(1400));
        assert_eq!(r["name"], json!(""));
        let e = prepare_create(&[STANDARD, SPEC], o(json!({}))).unwrap_err();
        assert!(
            e.message.contains("Required attribute 'network_id'"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unknown_and_readonly() {
        let e = prepare_create(&[STANDARD, SPEC], o(json!({"bogus": 1, "network_id": "x"})))
            .unwrap_err();
        assert_eq!(e.status, 400);
        let e = prepare_update(&[STANDARD, SPEC], o(json!({"network_id": "x"}))).unwrap_err();
        assert!(e.message.contains("read-only"), "{}", e.message);
        let e = prepare_update(&[STANDARD, SPEC], o(json!({"name": "x".repeat(256)}))).unwrap_err();
        assert!(
            e.message.contains("exceeds maximum length"),
            "{}",
            e.message
        );
    }

    #[test]
    fn conversions_follow_neutron_lib() {
        let spec = [attr("flag", true, true, Ty::Bool, Default::None)];
        for (given, want) in [
            (json!("Yes"), true),
            (json!(" on "), true),
            (json!("t"), true),
            (json!(1), true),
            (json!("OFF"), false),
            (json!("n"), false),
            (json!(0), false),
        ] {
            let r = prepare_update(&[&spec], o(json!({"flag": given}))).unwrap();
            assert_eq!(r["flag"], json!(want), "{given}");
        }
        // Failed conversions are InvalidInput, as neutron-lib's converters raise them.
        let e = prepare_update(&[&spec], o(json!({"flag": "maybe"}))).unwrap_err();
        assert_eq!(e.kind, "InvalidInput");
        assert_eq!(
            e.message,
            "Invalid input for operation: 'maybe' cannot be converted to boolean."
        );
        let e = prepare_update(&[&spec], o(json!({"flag": 2}))).unwrap_err();
        assert_eq!(e.kind, "InvalidInput");
        let e = prepare_update(&[SPEC], o(json!({"mtu": "12x"}))).unwrap_err();
        assert_eq!(e.kind, "InvalidInput");
        assert_eq!(
            e.message,
            "Invalid input for operation: '12x' is not an integer."
        );
        // Validation failures stay HTTPBadRequest, as convert_values raises them.
        let e = prepare_create(&[STANDARD, SPEC], o(json!({"network_id": "x"}))).unwrap_err();
        assert_eq!(e.kind, "HTTPBadRequest");
    }

    #[test]
    fn control_characters() {
        let e = prepare_update(&[STANDARD], o(json!({"name": "a\tb"}))).unwrap_err();
        assert_eq!(e.status, 400);
        let r = prepare_update(&[STANDARD], o(json!({"description": "a\tb\r\nc"}))).unwrap();
        assert_eq!(r["description"], json!("a\tb\r\nc"));
        prepare_update(&[STANDARD], o(json!({"description": "a\u{0}"}))).unwrap_err();
    }

    #[test]
    fn tenant_and_project_must_agree() {
        let e = prepare_create(&[STANDARD], o(json!({"project_id": "a", "tenant_id": "b"})))
            .unwrap_err();
        assert_eq!(e.status, 400);
        let r = prepare_create(&[STANDARD], o(json!({"tenant_id": "b"}))).unwrap();
        assert_eq!(r["project_id"], json!("b"));
        assert!(!r.contains_key("tenant_id"));
    }
}
