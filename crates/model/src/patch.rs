//! JSON, merge, strategic-merge and apply patches over `serde_json::Value`.
//!
//! These are the four ways a client may change an existing object through `PATCH` (and
//! server-side apply), all pure functions with no I/O:
//!
//! - [`json_patch()`]: RFC 6902 operations (`application/json-patch+json`);
//! - [`merge_patch`]: RFC 7386 (`application/merge-patch+json`);
//! - [`strategic_merge_patch`]: Kubernetes' strategic merge patch
//!   (`application/strategic-merge-patch+json`), which is what `kubectl apply`, `set image`,
//!   `cordon`, `taint`, `label`, `annotate`, `edit`, `rollout restart` and `drain` send;
//! - [`apply_patch`]: the merge server-side apply (`application/apply-patch+yaml`) performs when
//!   the object already exists.
//!
//! Strategic merge differs from a plain merge patch in how it treats lists: some lists are
//! merged entry by entry on a *merge key* (containers by `name`, env vars by `name`, …), some
//! lists of primitives are merged as sets (`metadata.finalizers`), the rest are replaced. Which
//! rule applies is decided by [`merge_key`] from the path of field names, since Trireme does not
//! carry the Go struct tags Kubernetes reads the rules from. Patches may also carry directives
//! (`$patch`, `$retainKeys`, `$setElementOrder/<field>`, `$deleteFromPrimitiveList/<field>`),
//! which are interpreted and never stored.

use serde::Deserialize;
use serde_json::{Map, Value};

/// `$patch: replace | delete | merge` on a map or a list entry.
const PATCH_DIRECTIVE: &str = "$patch";
/// `$retainKeys: [..]`: the keys a map keeps after merging.
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
/// `$setElementOrder/<field>: [..]`: the final order of a merged list.
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder/";
/// `$deleteFromPrimitiveList/<field>: [..]`: values to remove from a list of primitives.
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList/";

/// Why a patch could not be applied. The messages are shown to clients (kubectl prints them),
/// so they say what was wrong with the patch, in the patch's own terms.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The body of a JSON patch is not a list of RFC 6902 operations.
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(#[source] serde_json::Error),
    /// A JSON patch operation failed (a path that does not exist, a `test` that did not match).
    #[error("the JSON patch could not be applied: {0}")]
    JsonPatchFailed(#[source] json_patch::PatchError),
    /// A merge, strategic merge or apply patch whose body is not a JSON object.
    #[error("a {patch_type} must be a JSON object, not {found}")]
    NotAnObject {
        /// Which kind of patch was sent ("merge patch", "strategic merge patch", …).
        patch_type: &'static str,
        /// The JSON type that was sent instead.
        found: &'static str,
    },
    /// An entry of a list merged by key does not carry the key, so it matches nothing.
    #[error("an entry of list \"{field}\" does not contain its merge key \"{key}\": {entry}")]
    MissingMergeKey {
        /// The dotted path of the list.
        field: String,
        /// The merge key the list is merged by.
        key: &'static str,
        /// The offending entry, as JSON.
        entry: String,
    },
    /// An entry of a list merged by key is not an object.
    #[error("list \"{field}\" is merged by key \"{key}\", so its entries must be objects, not {found}")]
    EntryNotAnObject {
        /// The dotted path of the list.
        field: String,
        /// The merge key the list is merged by.
        key: &'static str,
        /// The JSON type of the offending entry.
        found: &'static str,
    },
    /// A patch directive (`$patch`, `$retainKeys`, …) that is malformed or contradicts the patch.
    #[error("invalid {directive} directive at \"{field}\": {reason}")]
    InvalidDirective {
        /// The directive, as written in the patch.
        directive: String,
        /// The dotted path of the map that carries it.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How a list is combined with the list of the same field in a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeStrategy {
    /// The patch's list replaces the original list wholesale (also RFC 7386's only behaviour).
    Replace,
    /// A list of objects merged entry by entry: the entry whose value under this key equals a
    /// patch entry's is merged with it, patch entries with new key values are appended.
    MergeByKey(&'static str),
    /// A list of primitives merged as a set: the union of both, the original's order first.
    MergePrimitives,
}

/// The list-merge rule for the list at `path`, the field names from the object's root (list
/// indices skipped): `["spec", "template", "spec", "containers"]` for a Deployment's
/// containers, `["spec", "ports"]` for a Service's ports.
///
/// These mirror the `patchStrategy`/`patchMergeKey` tags of Kubernetes' built-in types. Rules
/// that only make sense in one place are matched on the full path or on the parent field, so
/// that a Service's `spec.ports` (by `port`) and a container's `ports` (by `containerPort`) do
/// not collide; everything unknown is replaced, as Kubernetes does for untagged lists.
pub fn merge_key(path: &[&str]) -> MergeStrategy {
    use MergeStrategy::{MergeByKey, MergePrimitives, Replace};

    let Some((&field, parents)) = path.split_last() else {
        return Replace;
    };
    let parent = parents.last().copied();
    let in_container = matches!(parent, Some("containers" | "initContainers" | "ephemeralContainers"));

    match (path, parent, field) {
        // Fields of a container (including init and ephemeral ones).
        (_, _, "ports") if in_container => MergeByKey("containerPort"),
        (_, _, "env") if in_container => MergeByKey("name"),
        (_, _, "volumeMounts") if in_container => MergeByKey("mountPath"),
        (_, _, "volumeDevices") if in_container => MergeByKey("devicePath"),
        // Object metadata, wherever it sits (pod templates have their own).
        (_, Some("metadata"), "finalizers") => MergePrimitives,
        (_, Some("metadata"), "ownerReferences") => MergeByKey("uid"),
        // Fields that only exist at one place of one kind.
        (["spec", "ports"], _, _) => MergeByKey("port"),
        (["spec", "taints"], _, _) => MergeByKey("key"),
        (["spec", "podCIDRs"], _, _) => MergePrimitives,
        (["status", "addresses"], _, _) => MergeByKey("type"),
        (["status", "podIPs" | "hostIPs"], _, _) => MergeByKey("ip"),
        // A ServiceAccount's secrets sit at the root.
        (["secrets"], _, _) => MergeByKey("name"),
        // Pod spec fields (a Pod's, a template's, a CronJob's job template's, …).
        (_, _, "containers" | "initContainers" | "ephemeralContainers") => MergeByKey("name"),
        (_, _, "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates") => MergeByKey("name"),
        (_, _, "hostAliases") => MergeByKey("ip"),
        (_, _, "topologySpreadConstraints") => MergeByKey("topologyKey"),
        // Conditions of every kind's status are keyed by type.
        (_, _, "conditions") => MergeByKey("type"),
        // Tolerations, Endpoints subsets and every untagged list are atomic.
        _ => Replace,
    }
}

/// Applies an RFC 6902 JSON patch (a list of `add`/`remove`/`replace`/`move`/`copy`/`test`
/// operations) to `original`, returning the patched copy. Operations apply in order; if any
/// fails (including a `test` that does not match), nothing is applied.
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let operations = json_patch::Patch::deserialize(patch).map_err(PatchError::InvalidJsonPatch)?;
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &operations).map_err(PatchError::JsonPatchFailed)?;
    Ok(patched)
}

/// Applies an RFC 7386 JSON merge patch to `original`: maps merge recursively, `null` deletes a
/// key, and every other value (lists included) replaces the original one.
///
/// The patch must be an object: RFC 7386 would let a non-object replace the whole document,
/// which for a Kubernetes object is never what the client meant.
pub fn merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    require_object(patch, "merge patch")?;
    let mut patched = original.clone();
    json_patch::merge(&mut patched, patch);
    Ok(patched)
}

/// Applies a Kubernetes strategic merge patch to `original`.
///
/// - Maps merge recursively; a `null` value deletes the key.
/// - Lists follow [`merge_key`]: lists merged by key have each patch entry merged into the
///   original entry with the same key value (new ones appended in patch order), lists of
///   primitives merged as sets get the patch's new values appended, other lists are replaced.
/// - Directives: `$patch: delete` in a list entry deletes the matching entry, on a map deletes
///   the map; `$patch: replace` on a map (or a keyed list entry) replaces it instead of merging
///   into it, and a list entry that is only `{"$patch": "replace"}` makes the rest of the
///   patch's list replace the whole list; `$setElementOrder/<field>` gives the final order of
///   the merged list (entries it does not mention follow, in their merged order);
///   `$retainKeys` keeps only the listed keys of the merged map;
///   `$deleteFromPrimitiveList/<field>` removes values from a list of primitives.
///
/// Directives never appear in the result. A `$patch: delete` on the root yields `{}`.
pub fn strategic_merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let patch = require_object(patch, "strategic merge patch")?;
    merge_root(original, patch)
}

/// Merges an applied configuration into the existing object, as server-side apply does when the
/// object exists: the applied fields win, fields the applied configuration does not mention are
/// kept, and lists are merged with the same rules as [`strategic_merge_patch`] (containers by
/// name, finalizers as a set, …).
///
/// Field ownership (`metadata.managedFields`) is not tracked, so a field that a manager removes
/// from its applied configuration is not deleted from the object: it is simply kept, like any
/// field the configuration does not mention. An explicit `null` does remove a field.
pub fn apply_patch(existing: &Value, applied: &Value) -> Result<Value, PatchError> {
    let applied = require_object(applied, "apply configuration")?;
    merge_root(existing, applied)
}

/// The body of a merge, strategic merge or apply patch as an object, or the error saying it is
/// not one.
fn require_object<'a>(patch: &'a Value, patch_type: &'static str) -> Result<&'a Map<String, Value>, PatchError> {
    patch.as_object().ok_or(PatchError::NotAnObject { patch_type, found: json_type(patch) })
}

/// Strategic merge of a whole object; an original that is not an object counts as empty.
fn merge_root(original: &Value, patch: &Map<String, Value>) -> Result<Value, PatchError> {
    let mut path = Vec::new();
    let merged = merge_map(original.as_object(), patch, &mut path)?;
    Ok(Value::Object(merged.unwrap_or_default()))
}

/// Whether `key` is a patch directive rather than a field. Only the known directives count:
/// other `$`-prefixed keys are real fields (a CRD's schema has `$ref` and `$schema`).
fn is_directive(key: &str) -> bool {
    key == PATCH_DIRECTIVE
        || key == RETAIN_KEYS_DIRECTIVE
        || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
}

/// Merges a patch value into the original value of the same field. `None` means the field is
/// to be removed (a `$patch: delete` map).
///
/// A missing original, or one of another JSON type, is merged as if empty: the patch value then
/// replaces it, but still has its directives interpreted and its nulls dropped.
fn merge_value<'a>(
    original: Option<&Value>,
    patch: &'a Value,
    path: &mut Vec<&'a str>,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Object(patch) => Ok(merge_map(original.and_then(Value::as_object), patch, path)?.map(Value::Object)),
        Value::Array(patch) => {
            Ok(Some(Value::Array(merge_list(original.and_then(Value::as_array).map(Vec::as_slice), patch, path)?)))
        }
        scalar => Ok(Some(scalar.clone())),
    }
}

/// Merges a patch map into the original map at `path`; `None` means the map is deleted.
fn merge_map<'a>(
    original: Option<&Map<String, Value>>,
    patch: &'a Map<String, Value>,
    path: &mut Vec<&'a str>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    let mut merged = match patch.get(PATCH_DIRECTIVE) {
        None => original.cloned().unwrap_or_default(),
        Some(Value::String(directive)) => match directive.as_str() {
            "delete" => return Ok(None),
            // The rest of the patch map is the new value, still cleaned of directives below.
            "replace" => Map::new(),
            "merge" => original.cloned().unwrap_or_default(),
            other => {
                return Err(invalid_directive(
                    PATCH_DIRECTIVE,
                    path,
                    format!("unknown value {other:?}; expected \"replace\", \"delete\" or \"merge\""),
                ));
            }
        },
        Some(other) => {
            return Err(invalid_directive(
                PATCH_DIRECTIVE,
                path,
                format!("expected a string, not {}", json_type(other)),
            ));
        }
    };

    // Deletions apply to the original list before the patch's own entries for the field are
    // merged, so a patch can both remove and add values of the same list.
    for (key, value) in patch {
        let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST_PREFIX) else {
            continue;
        };
        let Value::Array(remove) = value else {
            return Err(invalid_directive(key, path, format!("expected a list, not {}", json_type(value))));
        };
        if let Some(Value::Array(list)) = merged.get_mut(field) {
            list.retain(|item| !remove.contains(item));
        }
    }

    for (key, value) in patch {
        if is_directive(key) {
            continue;
        }
        if value.is_null() {
            merged.remove(key);
            continue;
        }
        path.push(key);
        let result = merge_value(merged.get(key), value, path);
        path.pop();
        match result? {
            Some(value) => merged.insert(key.clone(), value),
            None => merged.remove(key),
        };
    }

    // Ordering comes after merging: the order lists every entry of the final list, including
    // ones that only the original had.
    for (key, value) in patch {
        let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER_PREFIX) else {
            continue;
        };
        let Value::Array(order) = value else {
            return Err(invalid_directive(key, path, format!("expected a list, not {}", json_type(value))));
        };
        if let Some(Value::Array(list)) = merged.get_mut(field) {
            path.push(field);
            let result = apply_element_order(list, order, path);
            path.pop();
            result?;
        }
    }

    if let Some(retain) = patch.get(RETAIN_KEYS_DIRECTIVE) {
        let keys = retained_keys(retain, path)?;
        // A patch that sets a field it also asks to drop is contradictory; Kubernetes rejects it.
        if let Some(key) = patch.iter().find(|(k, v)| !is_directive(k) && !v.is_null() && !keys.contains(&k.as_str())) {
            return Err(invalid_directive(
                RETAIN_KEYS_DIRECTIVE,
                path,
                format!("the patch sets field {:?}, which is not among the retained keys", key.0),
            ));
        }
        merged.retain(|key, _| keys.contains(&key.as_str()));
    }

    Ok(Some(merged))
}

/// The keys listed by a `$retainKeys` directive.
fn retained_keys<'v>(retain: &'v Value, path: &[&str]) -> Result<Vec<&'v str>, PatchError> {
    let not_strings = || invalid_directive(RETAIN_KEYS_DIRECTIVE, path, "expected a list of field names".to_owned());
    retain.as_array().ok_or_else(not_strings)?.iter().map(|key| key.as_str().ok_or_else(not_strings)).collect()
}

/// Merges a patch list into the original list at `path`, following [`merge_key`].
fn merge_list<'a>(
    original: Option<&[Value]>,
    patch: &'a [Value],
    path: &mut Vec<&'a str>,
) -> Result<Vec<Value>, PatchError> {
    let strategy = merge_key(path);

    // Sort out the entries that are directives about the list rather than values of it.
    let mut replace_list = false;
    let mut deletions = Vec::new();
    let mut entries = Vec::new();
    for entry in patch {
        let directive = entry.as_object().and_then(|map| map.get(PATCH_DIRECTIVE).map(|d| (map, d)));
        match directive {
            None => entries.push(entry),
            Some((_, Value::String(d))) if d == "delete" => deletions.push(entry),
            // A bare `{"$patch": "replace"}` stands for the whole list; with other fields it is
            // an entry replacing its match, which merge_map handles.
            Some((map, Value::String(d))) if d == "replace" && map.len() == 1 => replace_list = true,
            Some(_) => entries.push(entry),
        }
    }

    let mut merged: Vec<Value> = match original {
        Some(original) if !replace_list && strategy != MergeStrategy::Replace => original.to_vec(),
        _ => Vec::new(),
    };

    if let MergeStrategy::MergeByKey(key) = strategy {
        for deletion in deletions {
            let value = entry_key(deletion, key, path)?;
            merged.retain(|item| item.get(key) != Some(value));
        }
    }
    // Deletions in lists not merged by key have nothing to match, so they only vanish.

    match strategy {
        MergeStrategy::MergeByKey(key) if !replace_list => {
            for entry in entries {
                let value = entry_key(entry, key, path)?;
                let Some(entry) = entry.as_object() else {
                    // entry_key only accepts objects.
                    continue;
                };
                match merged.iter().position(|item| item.get(key) == Some(value)) {
                    Some(index) => match merge_map(merged[index].as_object(), entry, path)? {
                        Some(map) => merged[index] = Value::Object(map),
                        None => {
                            merged.remove(index);
                        }
                    },
                    None => {
                        if let Some(map) = merge_map(None, entry, path)? {
                            merged.push(Value::Object(map));
                        }
                    }
                }
            }
        }
        MergeStrategy::MergePrimitives if !replace_list => {
            for entry in entries {
                if let Some(value) = merge_value(None, entry, path)?
                    && !merged.contains(&value)
                {
                    merged.push(value);
                }
            }
        }
        _ => {
            for entry in entries {
                if let Some(value) = merge_value(None, entry, path)? {
                    merged.push(value);
                }
            }
        }
    }
    Ok(merged)
}

/// The merge-key value of a patch entry of a list merged by `key`.
fn entry_key<'v>(entry: &'v Value, key: &'static str, path: &[&str]) -> Result<&'v Value, PatchError> {
    let Some(map) = entry.as_object() else {
        return Err(PatchError::EntryNotAnObject { field: dotted(path), key, found: json_type(entry) });
    };
    match map.get(key) {
        Some(value) if !value.is_null() => Ok(value),
        _ => Err(PatchError::MissingMergeKey { field: dotted(path), key, entry: entry.to_string() }),
    }
}

/// Reorders a merged list as a `$setElementOrder` directive says: the entries it names first, in
/// its order, then the others in their current relative order. Names of entries the list does
/// not have are ignored (the entry may have been deleted by the same patch).
fn apply_element_order(list: &mut Vec<Value>, order: &[Value], path: &[&str]) -> Result<(), PatchError> {
    let key = match merge_key(path) {
        MergeStrategy::MergeByKey(key) => Some(key),
        MergeStrategy::MergePrimitives => None,
        // An atomic list is exactly the patch's list; there is no merged order to fix.
        MergeStrategy::Replace => return Ok(()),
    };
    let identity = |item: &Value| -> Option<Value> {
        match key {
            Some(key) => item.get(key).cloned(),
            None => Some(item.clone()),
        }
    };

    let mut remaining: Vec<Option<Value>> = std::mem::take(list).into_iter().map(Some).collect();
    let mut ordered = Vec::with_capacity(remaining.len());
    for wanted in order {
        let wanted = match key {
            Some(key) => entry_key(wanted, key, path)?.clone(),
            None => wanted.clone(),
        };
        for slot in remaining.iter_mut() {
            if slot.as_ref().and_then(identity).as_ref() == Some(&wanted) {
                ordered.extend(slot.take());
            }
        }
    }
    ordered.extend(remaining.into_iter().flatten());
    *list = ordered;
    Ok(())
}

/// An [`PatchError::InvalidDirective`] for `directive` in the map at `path`.
fn invalid_directive(directive: &str, path: &[&str], reason: String) -> PatchError {
    PatchError::InvalidDirective { directive: directive.to_owned(), field: dotted(path), reason }
}

/// A field path as users write it (`spec.template.spec.containers`).
fn dotted(path: &[&str]) -> String {
    if path.is_empty() { "<root>".to_owned() } else { path.join(".") }
}

/// The JSON type of a value, with an article, for error messages.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Applies a strategic merge patch that is expected to succeed.
    fn smp(original: &Value, patch: Value) -> Value {
        strategic_merge_patch(original, &patch).expect("strategic merge patch applies")
    }

    /// A Deployment with two containers, the usual target of kubectl's patches.
    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"a": "1", "b": "2"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": "nginx:1",
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "env": [{"name": "FOO", "value": "foo"}, {"name": "BAR", "value": "bar"}]
                            },
                            {"name": "sidecar", "image": "envoy:1"}
                        ],
                        "tolerations": [{"key": "a", "operator": "Exists"}]
                    }
                }
            }
        })
    }

    /// Asserts that no directive key is left anywhere in `value`.
    fn assert_no_directives(value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    assert!(!is_directive(key), "directive {key} survived in {value}");
                    assert_no_directives(value);
                }
            }
            Value::Array(list) => list.iter().for_each(assert_no_directives),
            _ => {}
        }
    }

    #[test]
    fn kubectl_apply_second_run_changes_an_image_and_drops_env_with_null() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}],
                "containers": [{"name": "web", "image": "nginx:2", "env": null}]
            }}}}),
        );
        let containers = &patched["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            containers,
            &json!([
                {"name": "sidecar", "image": "envoy:1"},
                {"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80, "protocol": "TCP"}]}
            ])
        );
        assert_eq!(patched["spec"]["replicas"], 3);
        assert_no_directives(&patched);
    }

    #[test]
    fn kubectl_apply_deletes_one_env_var_and_keeps_the_declared_order() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{
                    "name": "web",
                    "$setElementOrder/env": [{"name": "BAR"}, {"name": "BAZ"}],
                    "env": [{"$patch": "delete", "name": "FOO"}, {"name": "BAZ", "value": "baz"}]
                }]
            }}}}),
        );
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([{"name": "BAR", "value": "bar"}, {"name": "BAZ", "value": "baz"}])
        );
        assert_eq!(patched["spec"]["template"]["spec"]["containers"][1]["name"], "sidecar");
        assert_no_directives(&patched);
    }

    #[test]
    fn set_element_order_puts_unmentioned_entries_after_the_mentioned_ones() {
        let original = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
        let patched = smp(&original, json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "x"}]}}));
        assert_eq!(patched, json!({"spec": {"containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}));
    }

    #[test]
    fn set_image_changes_one_container_and_keeps_the_other_and_all_other_fields() {
        let original = deployment();
        let patched =
            smp(&original, json!({"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:2"}]}}}}));
        let mut expected = original;
        expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert_eq!(patched, expected);
    }

    #[test]
    fn cordon_sets_unschedulable_and_keeps_the_rest_of_the_node() {
        let node = json!({
            "metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.0.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]}
        });
        let patched = smp(&node, json!({"spec": {"unschedulable": true}}));
        assert_eq!(patched["spec"]["unschedulable"], true);
        assert_eq!(patched["spec"]["podCIDR"], "10.0.0.0/24");
        assert_eq!(patched["spec"]["taints"], node["spec"]["taints"]);
    }

    #[test]
    fn taints_merge_by_key() {
        let node = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}});
        let added = smp(&node, json!({"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]}}));
        assert_eq!(
            added["spec"]["taints"],
            json!([{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoExecute"}])
        );
        let removed = smp(&added, json!({"spec": {"taints": [{"$patch": "delete", "key": "a"}]}}));
        assert_eq!(removed["spec"]["taints"], json!([{"key": "b", "effect": "NoExecute"}]));
    }

    #[test]
    fn a_null_label_removes_only_that_label() {
        let patched = smp(&deployment(), json!({"metadata": {"labels": {"a": null}}}));
        assert_eq!(patched["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(patched["metadata"]["name"], "web");
    }

    #[test]
    fn rollout_restart_adds_a_template_annotation() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}}),
        );
        assert_eq!(patched["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"], "now");
        assert_eq!(patched["spec"]["template"]["metadata"]["labels"], json!({"app": "web"}));
    }

    #[test]
    fn a_delete_directive_in_a_list_entry_removes_that_container() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}),
        );
        let containers = patched["spec"]["template"]["spec"]["containers"].as_array().expect("containers is a list");
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["name"], "web");
    }

    #[test]
    fn a_delete_directive_on_a_map_removes_the_map() {
        let patched = smp(&deployment(), json!({"spec": {"strategy": {"$patch": "delete"}}}));
        assert!(patched["spec"].get("strategy").is_none());
        assert_eq!(patched["spec"]["replicas"], 3);
    }

    #[test]
    fn a_replace_directive_on_a_map_replaces_it_instead_of_merging() {
        let patched = smp(&deployment(), json!({"metadata": {"labels": {"$patch": "replace", "c": "3", "d": null}}}));
        assert_eq!(patched["metadata"]["labels"], json!({"c": "3"}));
    }

    #[test]
    fn a_replace_directive_on_a_keyed_entry_replaces_only_that_entry() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "x", "$patch": "replace"}]}}}}),
        );
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "x"}, {"name": "sidecar", "image": "envoy:1"}])
        );
    }

    #[test]
    fn a_bare_replace_entry_replaces_the_whole_list() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}}}),
        );
        assert_eq!(patched["spec"]["template"]["spec"]["containers"], json!([{"name": "only", "image": "x"}]));
    }

    #[test]
    fn retain_keys_drops_rolling_update_when_switching_to_recreate() {
        let patched = smp(&deployment(), json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}}));
        assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_no_directives(&patched);
    }

    #[test]
    fn retain_keys_that_omit_a_patched_field_are_rejected() {
        let error = strategic_merge_patch(
            &deployment(),
            &json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {}}}}),
        )
        .expect_err("the patch contradicts its own $retainKeys");
        assert!(matches!(error, PatchError::InvalidDirective { .. }), "{error}");
    }

    #[test]
    fn finalizers_merge_as_a_set_keeping_order() {
        let original = json!({"metadata": {"finalizers": ["a", "b"]}});
        let patched = smp(&original, json!({"metadata": {"finalizers": ["c", "a", "d"]}}));
        assert_eq!(patched["metadata"]["finalizers"], json!(["a", "b", "c", "d"]));
    }

    #[test]
    fn delete_from_primitive_list_removes_finalizers_before_adding() {
        let original = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
        let patched = smp(
            &original,
            json!({"metadata": {
                "$deleteFromPrimitiveList/finalizers": ["a", "c"],
                "$setElementOrder/finalizers": ["d", "b"],
                "finalizers": ["d"]
            }}),
        );
        assert_eq!(patched, json!({"metadata": {"finalizers": ["d", "b"]}}));
    }

    #[test]
    fn service_ports_merge_by_port_and_container_ports_by_container_port() {
        let service = json!({"spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "https", "port": 443, "targetPort": 8443}
        ]}});
        let patched = smp(&service, json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 53}]}}));
        assert_eq!(
            patched["spec"]["ports"],
            json!([
                {"name": "http", "port": 80, "targetPort": 9090},
                {"name": "https", "port": 443, "targetPort": 8443},
                {"port": 53}
            ])
        );

        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 9090}]}
            ]}}}}),
        );
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 9090}])
        );
    }

    #[test]
    fn tolerations_are_replaced_wholesale() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}}}),
        );
        assert_eq!(patched["spec"]["template"]["spec"]["tolerations"], json!([{"key": "b", "operator": "Exists"}]));
    }

    #[test]
    fn new_fields_are_cleaned_of_directives_and_nulls() {
        let patched = smp(
            &json!({}),
            json!({"spec": {
                "$retainKeys": ["containers", "volumes"],
                "containers": [{"name": "a", "env": [{"name": "X", "value": null}], "$setElementOrder/env": [{"name": "X"}]}],
                "volumes": [{"$patch": "delete", "name": "gone"}]
            }}),
        );
        assert_eq!(patched, json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X"}]}], "volumes": []}}));
        assert_no_directives(&patched);
    }

    #[test]
    fn a_keyed_entry_without_its_key_is_rejected() {
        let error = strategic_merge_patch(
            &deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:2"}]}}}}),
        )
        .expect_err("a container without a name matches nothing");
        assert!(matches!(error, PatchError::MissingMergeKey { key: "name", .. }), "{error}");
        assert!(error.to_string().contains("spec.template.spec.containers"), "{error}");
    }

    #[test]
    fn unknown_patch_directives_are_rejected() {
        let error = strategic_merge_patch(&deployment(), &json!({"spec": {"$patch": "explode"}}))
            .expect_err("explode is no directive");
        assert!(matches!(error, PatchError::InvalidDirective { .. }), "{error}");
    }

    #[test]
    fn a_strategic_merge_patch_must_be_an_object() {
        let error = strategic_merge_patch(&deployment(), &json!([])).expect_err("a list is no strategic merge patch");
        assert_eq!(error.to_string(), "a strategic merge patch must be a JSON object, not a list");
    }

    #[test]
    fn merge_keys_follow_the_path_of_the_list() {
        use MergeStrategy::{MergeByKey, MergePrimitives, Replace};
        let cases: &[(&[&str], MergeStrategy)] = &[
            (&["spec", "template", "spec", "containers"], MergeByKey("name")),
            (&["spec", "containers"], MergeByKey("name")),
            (&["spec", "jobTemplate", "spec", "template", "spec", "initContainers"], MergeByKey("name")),
            (&["spec", "ephemeralContainers"], MergeByKey("name")),
            (&["spec", "containers", "ports"], MergeByKey("containerPort")),
            (&["spec", "template", "spec", "initContainers", "ports"], MergeByKey("containerPort")),
            (&["spec", "ports"], MergeByKey("port")),
            (&["spec", "containers", "env"], MergeByKey("name")),
            (&["spec", "containers", "volumeMounts"], MergeByKey("mountPath")),
            (&["spec", "containers", "volumeDevices"], MergeByKey("devicePath")),
            (&["spec", "volumes"], MergeByKey("name")),
            (&["spec", "imagePullSecrets"], MergeByKey("name")),
            (&["status", "conditions"], MergeByKey("type")),
            (&["metadata", "ownerReferences"], MergeByKey("uid")),
            (&["spec", "taints"], MergeByKey("key")),
            (&["status", "addresses"], MergeByKey("type")),
            (&["spec", "hostAliases"], MergeByKey("ip")),
            (&["spec", "tolerations"], Replace),
            (&["metadata", "finalizers"], MergePrimitives),
            (&["spec", "template", "metadata", "finalizers"], MergePrimitives),
            (&["spec", "resourceClaims"], MergeByKey("name")),
            (&["spec", "topologySpreadConstraints"], MergeByKey("topologyKey")),
            (&["subsets"], Replace),
            (&["spec", "containers", "args"], Replace),
            (&[], Replace),
        ];
        for (path, expected) in cases {
            assert_eq!(merge_key(path), *expected, "merge key of {path:?}");
        }
    }

    #[test]
    fn json_patch_adds_replaces_and_removes() {
        let patched = json_patch(
            &deployment(),
            &json!([
                {"op": "add", "path": "/metadata/labels/c", "value": "3"},
                {"op": "replace", "path": "/spec/replicas", "value": 5},
                {"op": "remove", "path": "/spec/template/spec/containers/1"}
            ]),
        )
        .expect("the JSON patch applies");
        assert_eq!(patched["metadata"]["labels"], json!({"a": "1", "b": "2", "c": "3"}));
        assert_eq!(patched["spec"]["replicas"], 5);
        assert_eq!(patched["spec"]["template"]["spec"]["containers"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn json_patch_with_a_failing_test_changes_nothing() {
        let error = json_patch(
            &deployment(),
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 5},
                {"op": "test", "path": "/spec/replicas", "value": 3}
            ]),
        )
        .expect_err("replicas is no longer 3 when the test runs");
        assert!(matches!(error, PatchError::JsonPatchFailed(_)), "{error}");
        assert!(error.to_string().contains("/spec/replicas"), "{error}");
    }

    #[test]
    fn json_patch_that_is_not_a_list_of_operations_is_rejected() {
        let error = json_patch(&deployment(), &json!({"op": "add"})).expect_err("not a list of operations");
        assert!(matches!(error, PatchError::InvalidJsonPatch(_)), "{error}");
    }

    #[test]
    fn merge_patch_deletes_with_null_and_replaces_lists() {
        let patched = merge_patch(
            &deployment(),
            &json!({"metadata": {"labels": {"a": null}}, "spec": {"template": {"spec": {"containers": []}}}}),
        )
        .expect("the merge patch applies");
        assert_eq!(patched["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(patched["spec"]["template"]["spec"]["containers"], json!([]));
        assert_eq!(patched["spec"]["replicas"], 3);
    }

    #[test]
    fn merge_patch_must_be_an_object() {
        let error = merge_patch(&deployment(), &json!("x")).expect_err("a string is no merge patch");
        assert!(matches!(error, PatchError::NotAnObject { patch_type: "merge patch", found: "a string" }));
    }

    #[test]
    fn apply_patch_keeps_fields_the_applied_config_does_not_mention() {
        let mut existing = deployment();
        existing["metadata"]["uid"] = json!("1234");
        existing["status"] = json!({"replicas": 3});
        let applied = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"c": "3"}, "finalizers": ["x"]},
            "spec": {"replicas": 4, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:3"}]}}}
        });
        let merged = apply_patch(&existing, &applied).expect("the apply configuration merges");
        assert_eq!(merged["metadata"]["uid"], "1234");
        assert_eq!(merged["metadata"]["labels"], json!({"a": "1", "b": "2", "c": "3"}));
        assert_eq!(merged["metadata"]["finalizers"], json!(["x"]));
        assert_eq!(merged["status"], json!({"replicas": 3}));
        assert_eq!(merged["spec"]["replicas"], 4);
        assert_eq!(merged["spec"]["strategy"]["type"], "RollingUpdate");
        let containers = &merged["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:3");
        assert_eq!(containers[0]["env"], existing["spec"]["template"]["spec"]["containers"][0]["env"]);
        assert_eq!(containers[1], json!({"name": "sidecar", "image": "envoy:1"}));
    }
}
