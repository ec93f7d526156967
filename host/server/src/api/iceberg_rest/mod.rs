//! The Iceberg REST catalog, read side, served under `/iceberg` (clients are given
//! `http://HOST:PORT/iceberg` as their catalog URI and append `/v1/...`).
//!
//! Routes, bodies and errors follow Apache Iceberg's `open-api/rest-catalog-open-api.yaml`.
//! Namespaces and tables are the engine's (`Engine::list_tables`); a table's metadata is the
//! JSON file its catalog entry points to. Tables are written by moonlink-host only: every
//! write route of the spec answers 403 `ForbiddenException` (403 is allowed on all of them).
//! Tables that failed to open are left out of listings and answer 503 when loaded. The bearer
//! token applies as on every other route; failures of any kind have the spec's error shape.

mod model;
mod refused;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use moonlink_engine::{EngineError, TableInfo};
use sha2::{Digest, Sha256};

pub(crate) use model::*;
pub(crate) use refused::*;

use super::{require_token, AppState};

/// The routes served, in the spec's notation (`CatalogConfig.endpoints`). Clients check this
/// list before calling, so writes fail in the client before any request is sent.
pub(crate) const ENDPOINTS: [&str; 6] = [
    "GET /v1/{prefix}/namespaces",
    "GET /v1/{prefix}/namespaces/{namespace}",
    "HEAD /v1/{prefix}/namespaces/{namespace}",
    "GET /v1/{prefix}/namespaces/{namespace}/tables",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
];

/// Spec namespace path parameter: levels separated by the unit separator (0x1F).
const NAMESPACE_SEPARATOR: char = '\u{1f}';

/// The router nested at `/iceberg`.
pub(crate) fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/config", get(get_config))
        .route("/v1/namespaces", get(list_namespaces).post(refuse_write))
        .route(
            "/v1/namespaces/{namespace}",
            get(load_namespace)
                .head(namespace_exists)
                .delete(refuse_write),
        )
        .route("/v1/namespaces/{namespace}/properties", post(refuse_write))
        .route(
            "/v1/namespaces/{namespace}/tables",
            get(list_tables).post(refuse_write),
        )
        .route(
            "/v1/namespaces/{namespace}/tables/{table}",
            get(load_table)
                .head(table_exists)
                .post(refuse_write)
                .delete(refuse_write),
        )
        .route("/v1/namespaces/{namespace}/register", post(refuse_write))
        .route(
            "/v1/namespaces/{namespace}/tables/{table}/unregister",
            post(refuse_write),
        )
        .route("/v1/tables/rename", post(refuse_write))
        .route("/v1/transactions/commit", post(refuse_write))
        .route("/v1/namespaces/{namespace}/views", post(refuse_write))
        .route(
            "/v1/namespaces/{namespace}/views/{view}",
            post(refuse_write).delete(refuse_write),
        )
        .route("/v1/views/rename", post(refuse_write))
        .route(
            "/v1/namespaces/{namespace}/register-view",
            post(refuse_write),
        )
        .route_layer(middleware::from_fn_with_state(state, require_token))
        .fallback(no_such_route)
        .layer(middleware::from_fn(rest_error_shape))
}

/// Gives every failed reply under `/iceberg` the spec's error shape, also those made outside
/// this module (the token check's 401, axum's 405 and extractor rejections).
async fn rest_error_shape(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<RestShaped>().is_some()
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    // The API's own error body has a `message`; axum's rejections are plain text.
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        message
    };
    let mut shaped = RestError::new(status, RestError::kind_for(status), message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    shaped
}

async fn no_such_route(method: Method) -> RestError {
    RestError::new(
        StatusCode::NOT_FOUND,
        "NotFoundException",
        format!("no such catalog route for {method} (see GET /iceberg/v1/config for the served endpoints)"),
    )
}

/// The single level of a namespace path parameter, if it names one of ours (multi-level
/// namespaces never do).
fn namespace_level(raw: &str) -> Option<&str> {
    let mut levels = raw.split(NAMESPACE_SEPARATOR);
    let first = levels.next()?;
    (levels.next().is_none() && !first.is_empty()).then_some(first)
}

/// Every namespace holding a table (a failed one included: its namespace exists), sorted.
fn namespaces(tables: &[TableInfo]) -> Vec<String> {
    let mut names: Vec<String> = tables.iter().map(|t| t.namespace.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// The namespace named by the path, or 404 `NoSuchNamespaceException`.
fn existing_namespace(tables: &[TableInfo], raw: &str) -> Result<String, RestError> {
    namespace_level(raw)
        .filter(|ns| tables.iter().any(|t| t.namespace == *ns))
        .map(str::to_string)
        .ok_or_else(|| RestError::no_such_namespace(&raw.replace(NAMESPACE_SEPARATOR, ".")))
}

/// The table named by the path: 404 `NoSuchTableException` if there is none, 503 if it
/// failed to open (it exists, but cannot be read until an operator repairs or drops it).
fn servable_table(state: &AppState, namespace: &str, table: &str) -> Result<TableInfo, RestError> {
    let found = namespace_level(namespace).and_then(|ns| {
        state
            .engine
            .list_tables()
            .into_iter()
            .find(|t| t.namespace == ns && t.table == table)
    });
    match found {
        None => Err(RestError::no_such_table(
            &namespace.replace(NAMESPACE_SEPARATOR, "."),
            table,
        )),
        Some(info) if info.failed => Err(RestError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            format!(
                "table {}.{} failed to open: {}",
                info.namespace,
                info.table,
                info.last_error.as_deref().unwrap_or("unknown reason")
            ),
        )),
        Some(info) => Ok(info),
    }
}

// --- routes ----------------------------------------------------------------------------------

/// Spec `getConfig`. The `warehouse` parameter is ignored: one warehouse is served.
#[utoipa::path(get, path = "/iceberg/v1/config", tag = "iceberg", operation_id = "getConfig",
    params(("warehouse" = Option<String>, Query, description = "Ignored: one warehouse is served")),
    responses(
        (status = 200, description = "Catalog configuration and the served endpoints", body = CatalogConfig),
        ReadErrors,
    ))]
pub(crate) async fn get_config() -> Json<CatalogConfig> {
    Json(CatalogConfig {
        defaults: Default::default(),
        overrides: Default::default(),
        endpoints: ENDPOINTS.iter().map(|e| e.to_string()).collect(),
    })
}

/// Spec `listNamespaces`: the top level (there are no nested namespaces; a `parent` that
/// exists has none, one that does not is a 404).
#[utoipa::path(get, path = "/iceberg/v1/namespaces", tag = "iceberg", operation_id = "listNamespaces",
    params(
        ("pageToken" = Option<String>, Query, description = "Empty for the first page, then the previous reply's next-page-token; absent: everything at once"),
        ("pageSize" = Option<i64>, Query, minimum = 1, description = "At most this many items per page (with pageToken)"),
        ("parent" = Option<String>, Query, description = "List under this namespace (ours have no children)"),
    ),
    responses(
        (status = 200, description = "Namespaces", body = ListNamespacesResponse),
        ReadErrors,
    ))]
pub(crate) async fn list_namespaces(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ListNamespacesResponse>, RestError> {
    let tables = state.engine.list_tables();
    let names = match query.parent.as_deref() {
        // The spec treats an empty parent as absent.
        None | Some("") => namespaces(&tables),
        Some(parent) => {
            existing_namespace(&tables, parent)?;
            Vec::new()
        }
    };
    let (names, next_page_token) = page(names, |n| n.as_str(), &query)?;
    Ok(Json(ListNamespacesResponse {
        next_page_token,
        namespaces: names.into_iter().map(|n| vec![n]).collect(),
    }))
}

/// Spec `loadNamespaceMetadata`.
#[utoipa::path(get, path = "/iceberg/v1/namespaces/{namespace}", tag = "iceberg", operation_id = "loadNamespaceMetadata",
    params(("namespace" = String, Path, description = "Namespace; levels separated by %1F (ours have one)", example = "sales")),
    responses(
        (status = 200, description = "The namespace and its properties (none)", body = GetNamespaceResponse),
        ReadErrors,
    ))]
pub(crate) async fn load_namespace(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
) -> Result<Json<GetNamespaceResponse>, RestError> {
    let namespace = existing_namespace(&state.engine.list_tables(), &namespace)?;
    Ok(Json(GetNamespaceResponse {
        namespace: vec![namespace],
        properties: Default::default(),
    }))
}

/// Spec `namespaceExists`: 204 or 404.
#[utoipa::path(head, path = "/iceberg/v1/namespaces/{namespace}", tag = "iceberg", operation_id = "namespaceExists",
    params(("namespace" = String, Path, description = "Namespace; levels separated by %1F (ours have one)", example = "sales")),
    responses(
        (status = 204, description = "The namespace exists"),
        HeadErrors,
    ))]
pub(crate) async fn namespace_exists(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
) -> Result<StatusCode, RestError> {
    existing_namespace(&state.engine.list_tables(), &namespace)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Spec `listTables`: the namespace's tables that can be read (failed ones are left out so
/// one damaged table does not break a client listing the whole catalog).
#[utoipa::path(get, path = "/iceberg/v1/namespaces/{namespace}/tables", tag = "iceberg", operation_id = "listTables",
    params(
        ("namespace" = String, Path, description = "Namespace; levels separated by %1F (ours have one)", example = "sales"),
        ("pageToken" = Option<String>, Query, description = "Empty for the first page, then the previous reply's next-page-token; absent: everything at once"),
        ("pageSize" = Option<i64>, Query, minimum = 1, description = "At most this many items per page (with pageToken)"),
    ),
    responses(
        (status = 200, description = "The namespace's tables", body = ListTablesResponse),
        ReadErrors,
    ))]
pub(crate) async fn list_tables(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ListTablesResponse>, RestError> {
    let tables = state.engine.list_tables();
    let namespace = existing_namespace(&tables, &namespace)?;
    let mut names: Vec<String> = tables
        .into_iter()
        .filter(|t| t.namespace == namespace && !t.failed)
        .map(|t| t.table)
        .collect();
    names.sort();
    let (names, next_page_token) = page(names, |n| n.as_str(), &query)?;
    Ok(Json(ListTablesResponse {
        next_page_token,
        identifiers: names
            .into_iter()
            .map(|name| TableIdentifier {
                namespace: vec![namespace.clone()],
                name,
            })
            .collect(),
    }))
}

/// Spec `loadTable`: the current metadata file's location and content, and the storage
/// settings a client needs. `snapshots=refs` is answered with all snapshots, which the spec's
/// clients accept.
#[utoipa::path(get, path = "/iceberg/v1/namespaces/{namespace}/tables/{table}", tag = "iceberg", operation_id = "loadTable",
    params(("namespace" = String, Path, description = "Namespace; levels separated by %1F (ours have one)", example = "sales"), ("table" = String, Path, description = "Table name in the namespace", example = "orders"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier loadTable: 304 if the metadata has not changed")),
    responses(
        (status = 200, description = "The table's current metadata", body = LoadTableResult,
            headers(("ETag" = String, description = "Names this metadata version; send it back in If-None-Match"))),
        (status = 304, description = "The metadata is still the one If-None-Match names",
            headers(("ETag" = String, description = "The same tag"))),
        ReadErrors,
        (status = 503, description = "The table failed to open (ServiceUnavailableException)", body = IcebergErrorResponse,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn load_table(
    State(state): State<AppState>,
    Path((namespace, table)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let info = servable_table(&state, &namespace, &table)?;
    // Spec `If-None-Match`: a client that holds the current version reads nothing.
    let current = etag(&info.metadata_location, &state.iceberg_client_config);
    if if_none_match(&headers, &current) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, current)]).into_response());
    }
    let (metadata_location, bytes) = match state.engine.table_metadata_json(&info.name).await {
        Ok(found) => found,
        // Dropped since it was listed.
        Err(EngineError::TableNotFound(_)) => {
            return Err(RestError::no_such_table(&info.namespace, &info.table))
        }
        Err(e) => return Err(e.into()),
    };
    let metadata: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            format!("the metadata file {metadata_location} is not JSON: {e}"),
        )
    })?;
    let tag = etag(&metadata_location, &state.iceberg_client_config);
    let result = LoadTableResult {
        metadata_location,
        metadata,
        config: state.iceberg_client_config.clone(),
    };
    Ok(([(header::ETAG, tag)], Json(result)).into_response())
}

/// The ETag of a reply: metadata files are written once and never replaced, so the location
/// names the metadata; the storage config (which a restart may change) is the rest of it.
fn etag(metadata_location: &str, config: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(metadata_location.as_bytes());
    for (key, value) in config {
        // Length-prefixed, so no two different configs hash the same bytes.
        for part in [key, value] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    let digest = hasher.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether `If-None-Match` names `current` (a list of tags, weak ones compared weakly, or `*`).
fn if_none_match(headers: &HeaderMap, current: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == current)
}

/// Spec `tableExists`: 204 or 404 (503 for a table that failed to open).
#[utoipa::path(head, path = "/iceberg/v1/namespaces/{namespace}/tables/{table}", tag = "iceberg", operation_id = "tableExists",
    params(("namespace" = String, Path, description = "Namespace; levels separated by %1F (ours have one)", example = "sales"), ("table" = String, Path, description = "Table name in the namespace", example = "orders")),
    responses(
        (status = 204, description = "The table exists"),
        HeadErrors,
        (status = 503, description = "The table failed to open",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn table_exists(
    State(state): State<AppState>,
    Path((namespace, table)): Path<(String, String)>,
) -> Result<Response, RestError> {
    servable_table(&state, &namespace, &table)?;
    Ok((StatusCode::NO_CONTENT, Body::empty()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_levels() {
        assert_eq!(namespace_level("sales"), Some("sales"));
        assert_eq!(
            namespace_level("a\u{1f}b"),
            None,
            "two levels are never ours"
        );
        assert_eq!(namespace_level(""), None);
    }

    #[test]
    fn etags_name_a_metadata_location() {
        let none = BTreeMap::new();
        let a = etag("s3://b/wh/t/metadata/00001-x.metadata.json", &none);
        assert_eq!(a, etag("s3://b/wh/t/metadata/00001-x.metadata.json", &none));
        assert_ne!(a, etag("s3://b/wh/t/metadata/00002-y.metadata.json", &none));
        let config = BTreeMap::from([("s3.region".to_string(), "eu-west-1".to_string())]);
        assert_ne!(
            a,
            etag("s3://b/wh/t/metadata/00001-x.metadata.json", &config)
        );
        let mut headers = HeaderMap::new();
        assert!(!if_none_match(&headers, &a));
        headers.insert(header::IF_NONE_MATCH, "\"other\"".parse().expect("value"));
        assert!(!if_none_match(&headers, &a));
        let list = format!("\"other\", W/{a}");
        headers.insert(header::IF_NONE_MATCH, list.parse().expect("value"));
        assert!(if_none_match(&headers, &a));
    }

    #[test]
    fn endpoints_are_in_the_spec_notation() {
        for endpoint in ENDPOINTS {
            let (verb, path) = endpoint.split_once(' ').expect("verb and path");
            assert!(matches!(verb, "GET" | "HEAD"), "only reads are served");
            assert!(path.starts_with("/v1/{prefix}/"), "{endpoint}");
        }
    }
}
