//! The REST surface: `/api/v1/...` and `/apis/<group>/<version>/...` parsed into a target
//! (resource, namespace, name, subresource) and a verb, then one registry call each. Handlers
//! parse, call, and map the error — nothing more.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::http::Method;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::Response;
use k8s_openapi::api::authentication::v1::TokenRequest;
use serde_json::Value;
use serde_json::json;
use trireme_model::patch;
use trireme_model::resource;
use trireme_model::resource::ResourceType;
use trireme_model::selector::FieldSelector;
use trireme_model::selector::LabelSelector;
use trireme_model::version;
use trireme_registry::DeleteOptions;
use trireme_registry::ListOptions;
use trireme_registry::RegistryError;
use trireme_registry::Scope;
use trireme_registry::WatchOptions;
use trireme_registry::WriteOptions;
use trireme_registry::token::TokenGrant;

use crate::ApiState;
use crate::discovery;
use crate::status::Failure;
use crate::tables;
use crate::watch;

/// Query parameters, by name.
pub type Query = HashMap<String, String>;

/// What a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses the path after `/api/` or `/apis/` into a group, version and the rest.
fn split_group_version(legacy: bool, rest: &str) -> Option<(String, String, Vec<String>)> {
    let mut segs: Vec<String> = rest.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect();
    if legacy {
        if segs.is_empty() {
            return None;
        }
        let version = segs.remove(0);
        Some((String::new(), version, segs))
    } else {
        if segs.len() < 2 {
            return None;
        }
        let group = segs.remove(0);
        let version = segs.remove(0);
        Some((group, version, segs))
    }
}

/// Resolves resource segments (`pods`, `namespaces/ns/pods/x/status`, ...) to a target.
fn resolve(group: &str, version: &str, segs: &[String]) -> Result<Target, Failure> {
    let find = |plural: &str| resource::find(group, version, plural).ok_or_else(Failure::no_route);
    let target = |rt, namespace: Option<&String>, name: Option<&String>, sub: Option<&String>| Target {
        rt,
        namespace: namespace.cloned(),
        name: name.cloned(),
        subresource: sub.cloned(),
    };
    match segs {
        [res] => Ok(target(find(res)?, None, None, None)),
        [ns_word, ns, res] if ns_word == "namespaces" && res != "status" && res != "finalize" => {
            let rt = find(res)?;
            Ok(target(rt, Some(ns), None, None))
        }
        [res, name] => Ok(target(find(res)?, None, Some(name), None)),
        [res, name, sub] => Ok(target(find(res)?, None, Some(name), Some(sub))),
        [ns_word, ns, res, name] if ns_word == "namespaces" => Ok(target(find(res)?, Some(ns), Some(name), None)),
        [ns_word, ns, res, name, sub] if ns_word == "namespaces" => {
            Ok(target(find(res)?, Some(ns), Some(name), Some(sub)))
        }
        _ => Err(Failure::no_route()),
    }
}

/// Serves one `/api/...` or `/apis/...` request.
pub async fn serve(
    state: Arc<ApiState>,
    legacy: bool,
    method: Method,
    rest: String,
    query: Query,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match route(state, legacy, method, &rest, query, headers, body).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    }
}

async fn route(
    state: Arc<ApiState>,
    legacy: bool,
    method: Method,
    rest: &str,
    query: Query,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    let Some((group, version, segs)) = split_group_version(legacy, rest) else {
        if !legacy && method == Method::GET {
            let name = rest.trim_matches('/');
            return discovery::api_group(name)
                .map(|doc| json_response(StatusCode::OK, &doc))
                .ok_or_else(Failure::no_route);
        }
        return Err(Failure::no_route());
    };
    if segs.is_empty() {
        return match discovery::resource_list(&group, &version) {
            Some(doc) if method == Method::GET => Ok(json_response(StatusCode::OK, &doc)),
            _ => Err(Failure::no_route()),
        };
    }
    if (group.as_str(), version.as_str()) == discovery::AUTHORIZATION {
        return match (method, segs.as_slice()) {
            (Method::POST, [res]) if res == "selfsubjectaccessreviews" => Ok(access_review()),
            _ => Err(Failure::no_route()),
        };
    }
    let target = resolve(&group, &version, &segs)?;
    if target.rt.namespaced && target.namespace.is_none() {
        if target.name.is_some() {
            return Err(Failure::no_route());
        }
        if method != Method::GET {
            return Err(Failure::method_not_allowed(format!(
                "{} can only be created or deleted inside a namespace (/namespaces/<namespace>/{})",
                target.rt.plural, target.rt.plural
            )));
        }
    }
    let request = Call { state, target, query, headers, body };
    match (method, request.target.name.is_some(), request.target.subresource.as_deref()) {
        (Method::GET, false, None) if request.flag("watch") => request.watch().await,
        (Method::GET, false, None) => request.list().await,
        (Method::POST, false, None) => request.create().await,
        (Method::DELETE, false, None) => request.delete_collection().await,
        (Method::GET, true, None | Some("status")) => request.get().await,
        (Method::PUT, true, None) => request.update(Scope::Main).await,
        (Method::PUT, true, Some("status")) => request.update(Scope::Status).await,
        (Method::PATCH, true, None) => request.patch(Scope::Main).await,
        (Method::PATCH, true, Some("status")) => request.patch(Scope::Status).await,
        (Method::DELETE, true, None) => request.delete().await,
        (Method::GET, true, Some("scale")) => request.get_scale().await,
        (Method::PUT | Method::PATCH, true, Some("scale")) => request.change_scale().await,
        (Method::POST, true, Some("binding")) => request.bind().await,
        (Method::POST, true, Some("eviction")) => request.evict().await,
        (Method::POST, true, Some("token")) => request.token_request().await,
        (Method::PUT, true, Some("finalize")) => request.update(Scope::Main).await,
        (Method::GET, true, Some("log")) if request.rt().plural == "pods" => {
            let namespace = request.ns().unwrap_or("default");
            request.state.kubelets.pod_log(&request.state.registry, namespace, request.name(), &request.query).await
        }
        (_, true, Some("exec" | "attach" | "portforward")) => Err(Failure::bad_request(format!(
            "{} is not supported by Trireme yet (kubectl logs is)",
            request.target.subresource.as_deref().unwrap_or_default()
        ))),
        (method, _, sub) => Err(Failure::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {}{})",
            request.target.rt.plural,
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

/// One resource request being served.
struct Call {
    state: Arc<ApiState>,
    target: Target,
    query: Query,
    headers: HeaderMap,
    body: Bytes,
}

impl Call {
    fn rt(&self) -> &'static ResourceType {
        self.target.rt
    }

    fn ns(&self) -> Option<&str> {
        self.target.namespace.as_deref()
    }

    fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or_default()
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    fn write_options(&self) -> WriteOptions {
        WriteOptions {
            strict: self.param("fieldValidation") == Some("Strict"),
            dry_run: self.param("dryRun").is_some(),
            field_manager: self.param("fieldManager").map(str::to_string).or_else(|| user_agent_manager(&self.headers)),
            apply: false,
        }
    }

    fn wants_table(&self) -> bool {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.split(',').next().is_some_and(|first| first.contains("as=Table")))
    }

    fn selectors(&self) -> Result<(LabelSelector, FieldSelector), Failure> {
        let labels = LabelSelector::parse(self.param("labelSelector").unwrap_or_default())
            .map_err(|e| Failure::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(self.param("fieldSelector").unwrap_or_default())
            .map_err(|e| Failure::bad_request(format!("invalid field selector: {e}")))?;
        Ok((labels, fields))
    }

    fn read_at(&self) -> Result<version::ReadAt, Failure> {
        version::read_at(self.param("resourceVersion")).map_err(|e| Failure::bad_request(e.to_string()))
    }

    /// The request body as a JSON value (JSON or YAML).
    fn body_value(&self) -> Result<Value, Failure> {
        decode_body(&self.headers, &self.body)
    }

    async fn get(self) -> Result<Response, Failure> {
        let object = self.state.registry.get(self.rt(), self.ns(), self.name(), self.read_at()?).await?;
        if self.wants_table() {
            let rv = trireme_registry::object_revision(&object);
            return Ok(json_response(StatusCode::OK, &tables::table(self.rt(), &[object], rv, None)));
        }
        Ok(json_response(StatusCode::OK, &object))
    }

    async fn list(self) -> Result<Response, Failure> {
        let (labels, fields) = self.selectors()?;
        let limit = match self.param("limit") {
            Some(l) => Some(l.parse::<i64>().map_err(|_| Failure::bad_request(format!("invalid limit {l:?}")))?),
            None => None,
        };
        let options = ListOptions {
            labels,
            fields,
            limit,
            continue_token: self.param("continue").map(str::to_string),
            read: self.read_at()?,
            exact: self.param("resourceVersionMatch") == Some("Exact"),
        };
        let list = self.state.registry.list(self.rt(), self.ns(), &options).await?;
        if self.wants_table() {
            let table = tables::table(self.rt(), &list.items, list.revision, list.continue_token.as_deref());
            return Ok(json_response(StatusCode::OK, &table));
        }
        let mut metadata = json!({"resourceVersion": list.revision.to_string()});
        if let Some(token) = &list.continue_token {
            metadata["continue"] = json!(token);
        }
        let body = json!({
            "kind": format!("{}List", self.rt().kind),
            "apiVersion": self.rt().api_version(),
            "metadata": metadata,
            "items": list.items,
        });
        Ok(json_response(StatusCode::OK, &body))
    }

    async fn watch(self) -> Result<Response, Failure> {
        let (labels, fields) = self.selectors()?;
        let after = match self.read_at()? {
            version::ReadAt::Revision(rev) => Some(rev),
            _ => None,
        };
        let options = WatchOptions { labels, fields, after };
        let timeout = self.param("timeoutSeconds").and_then(|t| t.parse::<u64>().ok());
        let bookmarks = self.flag("allowWatchBookmarks");
        let table = self.wants_table();
        let rt = self.rt();
        let stream = match self.state.registry.watch(rt, self.ns(), options).await {
            Ok(stream) => Some(stream),
            Err(RegistryError::Expired(message)) => {
                return Ok(watch::expired_response(&message));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(watch::response(
            rt,
            stream,
            watch::Settings { timeout, bookmarks, table, shutdown: self.state.shutdown.clone() },
        ))
    }

    async fn create(self) -> Result<Response, Failure> {
        let object = self.body_value()?;
        let written = self.state.registry.create(self.rt(), self.ns(), object, &self.write_options()).await?;
        Ok(with_warnings(json_response(StatusCode::CREATED, &written.object), &written.warnings))
    }

    async fn update(self, scope: Scope) -> Result<Response, Failure> {
        let object = self.body_value()?;
        let written =
            self.state.registry.update(self.rt(), self.ns(), self.name(), object, scope, &self.write_options()).await?;
        Ok(with_warnings(json_response(StatusCode::OK, &written.object), &written.warnings))
    }

    async fn patch(self, scope: Scope) -> Result<Response, Failure> {
        let content_type = content_type(&self.headers);
        let body = self.body_value()?;
        let kind = PatchKind::from_content_type(&content_type)?;
        let mut options = self.write_options();
        options.apply = kind == PatchKind::Apply;
        let registry = &self.state.registry;
        if kind == PatchKind::Apply {
            if options.field_manager.is_none() {
                return Err(Failure::bad_request(
                    "PATCH requests with Content-Type application/apply-patch+yaml require a fieldManager",
                ));
            }
            match registry.get(self.rt(), self.ns(), self.name(), version::ReadAt::Latest).await {
                Err(RegistryError::NotFound { .. }) if scope == Scope::Main => {
                    let written = registry.create(self.rt(), self.ns(), body, &options).await?;
                    return Ok(json_response(StatusCode::CREATED, &written.object));
                }
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
        }
        let written = registry
            .update_with(
                self.rt(),
                self.ns(),
                self.name(),
                scope,
                &options,
                |current| {
                    let patched = kind.apply(current, &body).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
                    let before = current.pointer("/metadata/resourceVersion");
                    match patched.pointer("/metadata/resourceVersion") {
                        Some(rv) if Some(rv) != before => Err(RegistryError::Conflict {
                            resource: self.rt().qualified_plural(),
                            name: self.name().to_string(),
                            reason: "the object has been modified; please apply your changes to the latest version \
                                     and try again"
                                .into(),
                        }),
                        _ => Ok(patched),
                    }
                },
                None,
            )
            .await?;
        Ok(with_warnings(json_response(StatusCode::OK, &written.object), &written.warnings))
    }

    fn delete_options(&self) -> Result<DeleteOptions, Failure> {
        let mut options: DeleteOptions = if self.body.is_empty() {
            DeleteOptions::default()
        } else {
            serde_json::from_value(self.body_value()?)
                .map_err(|e| Failure::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        if let Some(grace) = self.param("gracePeriodSeconds") {
            options.grace_period_seconds =
                Some(grace.parse().map_err(|_| Failure::bad_request(format!("invalid gracePeriodSeconds {grace:?}")))?);
        }
        if let Some(policy) = self.param("propagationPolicy") {
            options.propagation_policy = Some(policy.to_string());
        }
        if let Some(policy) = &options.propagation_policy
            && !matches!(policy.as_str(), "Orphan" | "Background" | "Foreground")
        {
            return Err(Failure::bad_request(format!(
                "DeleteOptions.propagationPolicy: Unsupported value: {policy:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
        if self.param("dryRun").is_some() {
            options.dry_run = vec!["All".into()];
        }
        Ok(options)
    }

    async fn delete(self) -> Result<Response, Failure> {
        let options = self.delete_options()?;
        // A namespace becomes Terminating here; the namespace controller on the leader removes
        // its contents and then it.
        let deleted = self.state.registry.delete(self.rt(), self.ns(), self.name(), &options).await?;
        let code = if deleted.gone { StatusCode::OK } else { StatusCode::ACCEPTED };
        Ok(json_response(code, &deleted.object))
    }

    async fn delete_collection(self) -> Result<Response, Failure> {
        let options = self.delete_options()?;
        let (labels, fields) = self.selectors()?;
        let list = ListOptions { labels, fields, ..Default::default() };
        let deleted = self.state.registry.delete_collection(self.rt(), self.ns(), &list, &options).await?;
        let body = json!({
            "kind": format!("{}List", self.rt().kind),
            "apiVersion": self.rt().api_version(),
            "metadata": {},
            "items": deleted,
        });
        Ok(json_response(StatusCode::OK, &body))
    }

    fn check_scalable(&self) -> Result<(), Failure> {
        if self.rt().subresources.contains(&"scale") { Ok(()) } else { Err(Failure::no_route()) }
    }

    async fn get_scale(self) -> Result<Response, Failure> {
        self.check_scalable()?;
        let scale = self.state.registry.get_scale(self.rt(), self.ns(), self.name(), self.read_at()?).await?;
        Ok(json_response(StatusCode::OK, &scale))
    }

    async fn change_scale(self) -> Result<Response, Failure> {
        self.check_scalable()?;
        let body = self.body_value()?;
        let patch_kind =
            if self.headers.contains_key(header::CONTENT_TYPE) && content_type(&self.headers).contains("patch") {
                Some(PatchKind::from_content_type(&content_type(&self.headers))?)
            } else {
                None
            };
        let wanted = |scale: &Value| match patch_kind {
            Some(kind) => kind.apply(scale, &body).map_err(|e| RegistryError::BadRequest(e.to_string())),
            None => Ok(body.clone()),
        };
        let options = self.write_options();
        let scale = self.state.registry.update_scale(self.rt(), self.ns(), self.name(), &options, wanted).await?;
        Ok(json_response(StatusCode::OK, &scale))
    }

    /// `POST pods/<name>/binding`: assigns the pod to a node, once.
    async fn bind(self) -> Result<Response, Failure> {
        if self.rt().plural != "pods" {
            return Err(Failure::no_route());
        }
        let binding = self.body_value()?;
        let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or_default().to_string();
        if node.is_empty() {
            return Err(RegistryError::Invalid {
                kind: "Binding".into(),
                name: self.name().into(),
                causes: vec![trireme_model::field::FieldError::required("target.name")],
            }
            .into());
        }
        self.state.registry.bind(self.ns(), self.name(), &node).await?;
        Ok(json_response(StatusCode::CREATED, &success_status()))
    }

    /// `POST serviceaccounts/<name>/token` (TokenRequest): a signed token for the account.
    async fn token_request(self) -> Result<Response, Failure> {
        if self.rt().plural != "serviceaccounts" {
            return Err(Failure::no_route());
        }
        // kubectl may send the request as protobuf; its only inputs are optional, so a body
        // this server cannot read means the defaults.
        let request: TokenRequest = if self.body.is_empty() {
            TokenRequest::default()
        } else {
            self.body_value().ok().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default()
        };
        let namespace = self.ns().unwrap_or_default();
        let sign = |grant: &TokenGrant<'_>| {
            let reference = crate::tokens::ServiceAccountRef {
                namespace: namespace.to_string(),
                name: self.name().to_string(),
                uid: grant.account.metadata.uid.clone().unwrap_or_default(),
            };
            self.state
                .tokens
                .issue(&reference, grant.audiences, grant.issued_at, grant.seconds)
                .map_err(|e| e.to_string())
        };
        let issued =
            self.state.registry.token_request(namespace, self.name(), request, crate::tokens::ISSUER, sign).await?;
        Ok(json_response(StatusCode::CREATED, &trireme_registry::to_value(&issued)?))
    }

    /// `POST pods/<name>/eviction`: deletes the pod (there are no disruption budgets to check).
    async fn evict(self) -> Result<Response, Failure> {
        if self.rt().plural != "pods" {
            return Err(Failure::no_route());
        }
        let eviction = self.body_value()?;
        let options: DeleteOptions = match eviction.get("deleteOptions") {
            Some(o) if !o.is_null() => serde_json::from_value(o.clone())
                .map_err(|e| Failure::bad_request(format!("invalid deleteOptions: {e}")))?,
            _ => DeleteOptions::default(),
        };
        self.state.registry.delete(self.rt(), self.ns(), self.name(), &options).await?;
        Ok(json_response(StatusCode::CREATED, &success_status()))
    }
}

/// How a PATCH body is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchKind {
    fn from_content_type(content_type: &str) -> Result<PatchKind, Failure> {
        match content_type {
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchKind::Apply),
            other => Err(Failure {
                code: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                reason: "UnsupportedMediaType",
                message: format!(
                    "the body of the request was in an unknown format - accepted media types include: \
                     application/json-patch+json, application/merge-patch+json, \
                     application/strategic-merge-patch+json, application/apply-patch+yaml; got {other:?}"
                ),
                details: None,
            }),
        }
    }

    fn apply(self, current: &Value, body: &Value) -> Result<Value, patch::PatchError> {
        match self {
            PatchKind::Json => patch::json_patch(current, body),
            PatchKind::Merge => patch::merge_patch(current, body),
            PatchKind::Strategic => patch::strategic_merge_patch(current, body),
            PatchKind::Apply => patch::apply_patch(current, body),
        }
    }
}

/// The manager Kubernetes names when a request gives no `fieldManager`: the user agent's
/// program name (`kubectl-edit/v1.33.0 (linux/amd64)` → `kubectl-edit`).
fn user_agent_manager(headers: &HeaderMap) -> Option<String> {
    let agent = headers.get(header::USER_AGENT)?.to_str().ok()?;
    let name = agent.split('/').next()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The media type of the body, without parameters.
fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .unwrap_or_else(|| "application/json".into())
}

/// Decodes a JSON, YAML or Kubernetes protobuf body.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Failure> {
    let content_type = content_type(headers);
    let protobuf = content_type == crate::protobuf::MEDIA_TYPE;
    if (content_type.contains("protobuf") && !protobuf) || content_type.contains("cbor") {
        return Err(Failure::unsupported_media(&content_type));
    }
    if body.is_empty() {
        return Err(Failure::bad_request("the request body is empty"));
    }
    if protobuf {
        // kubectl's imperative commands (`kubectl create deployment`, ...) send protobuf.
        return crate::protobuf::decode(body).map_err(Failure::from);
    }
    if content_type.contains("yaml") {
        return serde_yaml_ng::from_slice(body).map_err(|e| Failure::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(body).map_err(|e| Failure::bad_request(format!("error decoding the request body: {e}")))
}

/// A JSON response.
pub fn json_response(code: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], Body::from(bytes)).into_response()
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "'"));
        if let Ok(value) = axum::http::HeaderValue::from_str(&text) {
            response.headers_mut().append("Warning", value);
        }
    }
    response
}

/// `kubectl auth can-i`: every authenticated request is the cluster admin's (service accounts'
/// permissions arrive with their tokens), so every review is allowed.
fn access_review() -> Response {
    let review = json!({
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {},
        "spec": {},
        "status": {"allowed": true, "reason": "the admin token may do anything"},
    });
    json_response(StatusCode::CREATED, &review)
}

fn success_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<String> {
        path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()
    }

    #[test]
    fn paths_resolve_to_resource_namespace_name_and_subresource() {
        let t = resolve("", "v1", &segs("namespaces/default/pods/web/status")).expect("pod status");
        assert_eq!((t.rt.plural, t.namespace.as_deref(), t.name.as_deref()), ("pods", Some("default"), Some("web")));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = resolve("", "v1", &segs("namespaces/default")).expect("namespace");
        assert_eq!((t.rt.plural, t.name.as_deref()), ("namespaces", Some("default")));
        let t = resolve("", "v1", &segs("namespaces/default/status")).expect("namespace status");
        assert_eq!((t.rt.plural, t.subresource.as_deref()), ("namespaces", Some("status")));
        let t = resolve("", "v1", &segs("namespaces/kube-system/services")).expect("services");
        assert_eq!((t.rt.plural, t.namespace.as_deref(), t.name), ("services", Some("kube-system"), None));
        let t = resolve("apps", "v1", &segs("deployments")).expect("all deployments");
        assert_eq!((t.rt.plural, t.namespace), ("deployments", None));
        assert!(resolve("", "v1", &segs("widgets")).is_err());
        assert!(resolve("apps", "v2", &segs("deployments")).is_err());
    }

    #[test]
    fn yaml_and_json_bodies_decode_and_garbage_is_a_bad_request() {
        let mut headers = HeaderMap::new();
        assert_eq!(decode_body(&headers, b"{\"a\":1}").expect("json"), json!({"a": 1}));
        headers.insert(header::CONTENT_TYPE, "application/yaml".parse().expect("header"));
        assert_eq!(decode_body(&headers, b"a: 1\n").expect("yaml"), json!({"a": 1}));
        headers.insert(header::CONTENT_TYPE, "application/json".parse().expect("header"));
        let failure = decode_body(&headers, b"{\"a\":").expect_err("truncated");
        assert_eq!(failure.code, StatusCode::BAD_REQUEST);
    }
}
