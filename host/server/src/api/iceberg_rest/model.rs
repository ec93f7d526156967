//! Bodies of the served Iceberg REST catalog, named and shaped as in Apache Iceberg's
//! `open-api/rest-catalog-open-api.yaml` (components/schemas), its error shape, and list paging.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoResponses, ToSchema};

use crate::error::ApiError;

/// Spec `CatalogConfig` (`GET /v1/config`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = IcebergCatalogConfig)]
pub(crate) struct CatalogConfig {
    /// Applied before the client's own configuration (none).
    pub(crate) defaults: BTreeMap<String, String>,
    /// Applied after the client's own configuration (none: no `prefix`, so paths are
    /// `/v1/namespaces/...`).
    pub(crate) overrides: BTreeMap<String, String>,
    /// The routes served, as "<verb> <path from the spec>"; clients call nothing else.
    pub(crate) endpoints: Vec<String>,
}

/// Spec `ListNamespacesResponse`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ListNamespacesResponse {
    /// Pass as `pageToken` for the next page; `null` on the last page.
    #[serde(rename = "next-page-token")]
    pub(crate) next_page_token: Option<String>,
    /// Each namespace as its list of levels (ours have one).
    pub(crate) namespaces: Vec<Vec<String>>,
}

/// Spec `GetNamespaceResponse`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GetNamespaceResponse {
    pub(crate) namespace: Vec<String>,
    /// Namespace properties (none are kept).
    pub(crate) properties: BTreeMap<String, String>,
}

/// Spec `TableIdentifier`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TableIdentifier {
    pub(crate) namespace: Vec<String>,
    pub(crate) name: String,
}

/// Spec `ListTablesResponse`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ListTablesResponse {
    /// Pass as `pageToken` for the next page; `null` on the last page.
    #[serde(rename = "next-page-token")]
    pub(crate) next_page_token: Option<String>,
    pub(crate) identifiers: Vec<TableIdentifier>,
}

/// Spec `LoadTableResult`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LoadTableResult {
    /// The current metadata JSON file.
    #[serde(rename = "metadata-location")]
    pub(crate) metadata_location: String,
    /// That file's content (Iceberg `TableMetadata`, format version 3).
    #[schema(value_type = Object)]
    pub(crate) metadata: Value,
    /// What a client needs to read the files: S3 endpoint, region, path style; never
    /// credentials.
    pub(crate) config: BTreeMap<String, String>,
}

/// Spec `ErrorModel`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = IcebergErrorModel)]
pub(crate) struct ErrorModel {
    pub(crate) message: String,
    /// The exception name Java and Python clients map to their own errors
    /// (`NoSuchTableException`, `NoSuchNamespaceException`, `ForbiddenException`, ...).
    #[serde(rename = "type")]
    #[schema(example = "NoSuchTableException")]
    pub(crate) kind: &'static str,
    /// The HTTP status.
    pub(crate) code: u16,
}

/// Spec `IcebergErrorResponse`: the body of every failed request under `/iceberg`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IcebergErrorResponse {
    pub(crate) error: ErrorModel,
}

/// Marks a reply that already has the Iceberg error shape (the reshaping layer leaves it alone).
#[derive(Clone, Copy)]
pub(super) struct RestShaped;

/// A failed catalog request, answered as `{"error": {"message", "type", "code"}}`.
#[derive(Debug)]
pub(crate) struct RestError {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl RestError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        RestError {
            status,
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn no_such_namespace(namespace: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchNamespaceException",
            format!("Namespace does not exist: {namespace}"),
        )
    }

    pub(crate) fn no_such_table(namespace: &str, table: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchTableException",
            format!("Table does not exist: {namespace}.{table}"),
        )
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }

    /// The exception name clients expect for a status (spec `components/responses`).
    pub(crate) fn kind_for(status: StatusCode) -> &'static str {
        match status.as_u16() {
            400 | 413 | 422 => "BadRequestException",
            401 => "NotAuthorizedException",
            403 => "ForbiddenException",
            404 => "NotFoundException",
            405 | 406 => "UnsupportedOperationException",
            409 => "AlreadyExistsException",
            503 | 429 => "ServiceUnavailableException",
            _ if status.is_server_error() => "InternalServerError",
            _ => "RESTException",
        }
    }
}

impl From<ApiError> for RestError {
    fn from(e: ApiError) -> Self {
        RestError::new(e.status, Self::kind_for(e.status), e.message)
    }
}

impl From<moonlink_engine::EngineError> for RestError {
    fn from(e: moonlink_engine::EngineError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(kind = self.kind, message = %self.message, "catalog request failed");
        }
        let body = IcebergErrorResponse {
            error: ErrorModel {
                message: self.message,
                kind: self.kind,
                code: self.status.as_u16(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            // Spec ServiceUnavailableResponse: a Retry-After says when to come back.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response.extensions_mut().insert(RestShaped);
        response
    }
}

// --- replies of the OpenAPI document (`/openapi.json`); the routes answer with `RestError` ---

/// Failures of the GET routes.
#[derive(IntoResponses)]
#[allow(dead_code)] // only describes replies
pub(crate) enum ReadErrors {
    /// 400.
    #[response(
        status = 400,
        description = "Undecodable path or query, or a bad pageSize (BadRequestException)"
    )]
    BadRequest(IcebergErrorResponse),
    /// 401.
    #[response(
        status = 401,
        description = "Missing or wrong bearer token (NotAuthorizedException)"
    )]
    Unauthorized(IcebergErrorResponse),
    /// 404.
    #[response(
        status = 404,
        description = "No such namespace or table (NoSuchNamespaceException, NoSuchTableException)"
    )]
    NotFound(IcebergErrorResponse),
}

/// Failures of the HEAD routes (no body).
#[derive(IntoResponses)]
#[allow(dead_code)] // only describes replies
pub(crate) enum HeadErrors {
    /// 400.
    #[response(status = 400, description = "Undecodable path")]
    BadRequest,
    /// 401.
    #[response(status = 401, description = "Missing or wrong bearer token")]
    Unauthorized,
    /// 404.
    #[response(status = 404, description = "No such namespace or table")]
    NotFound,
}

/// The answer of every write route of the spec.
#[derive(IntoResponses)]
#[allow(dead_code)] // only describes replies
pub(crate) enum WriteRefused {
    /// 401.
    #[response(
        status = 401,
        description = "Missing or wrong bearer token (NotAuthorizedException)"
    )]
    Unauthorized(IcebergErrorResponse),
    /// 403.
    #[response(
        status = 403,
        description = "Refused: tables are written by moonlink-host only (ForbiddenException)"
    )]
    Forbidden(IcebergErrorResponse),
    /// 404.
    #[response(
        status = 404,
        description = "No such route (an empty path segment) (NotFoundException)"
    )]
    NotFound(IcebergErrorResponse),
}

/// Spec `page-token` / `page-size` query parameters (and `parent` for namespaces); unknown
/// parameters are ignored. Numbers are parsed here so a bad one gets the Iceberg error shape.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(rename = "pageToken")]
    pub(crate) page_token: Option<String>,
    #[serde(rename = "pageSize")]
    pub(crate) page_size: Option<String>,
    pub(crate) parent: Option<String>,
}

/// One page of `items` (sorted by `key`, keys unique) and the token of the next page.
///
/// Spec `PageToken`: without `pageToken` every item comes in one reply and the next token is
/// null; with it (empty = the first page) at most `pageSize` items come after the token. The
/// token is the last key returned, so a listing stays in order when items come and go.
pub(crate) fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    query: &ListQuery,
) -> Result<(Vec<T>, Option<String>), RestError> {
    let size = match query.page_size.as_deref() {
        None => None,
        // The OpenAPI document says int64 (spec: integer, minimum 1).
        Some(s) => match s.parse::<i64>().ok().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n >= 1 => Some(n),
            _ => {
                return Err(RestError::bad_request(format!(
                    "pageSize must be a positive integer, not '{s}'"
                )))
            }
        },
    };
    let Some(token) = query.page_token.as_deref() else {
        return Ok((items, None));
    };
    let start = if token.is_empty() {
        0
    } else {
        items.partition_point(|item| key(item) <= token)
    };
    let end = size.map_or(items.len(), |n| start.saturating_add(n).min(items.len()));
    let next = (end < items.len() && end > start).then(|| key(&items[end - 1]).to_string());
    let page = items.into_iter().skip(start).take(end - start).collect();
    Ok((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(token: Option<&str>, size: Option<&str>) -> ListQuery {
        ListQuery {
            page_token: token.map(str::to_string),
            page_size: size.map(str::to_string),
            parent: None,
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i:02}")).collect()
    }

    #[test]
    fn without_a_token_everything_comes_at_once() {
        let (all, next) = page(names(5), |s| s, &query(None, Some("2"))).expect("page");
        assert_eq!(all.len(), 5);
        assert_eq!(next, None);
    }

    #[test]
    fn pages_follow_each_other_to_the_end() {
        let mut seen = Vec::new();
        let mut token = Some(String::new());
        while let Some(t) = token {
            let (items, next) = page(names(5), |s| s, &query(Some(&t), Some("2"))).expect("page");
            assert!(items.len() <= 2);
            seen.extend(items);
            token = next;
        }
        assert_eq!(seen, names(5));
        // A token for an item that is gone still continues after it.
        let (items, next) = page(names(5), |s| s, &query(Some("t01x"), Some("10"))).expect("page");
        assert_eq!(items, ["t02", "t03", "t04"]);
        assert_eq!(next, None);
    }

    #[test]
    fn bad_page_sizes_are_a_bad_request() {
        for size in ["0", "-1", "x", "", "9223372036854775808"] {
            let e = page(names(3), |s| s, &query(Some(""), Some(size))).expect_err(size);
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.kind, "BadRequestException");
        }
    }
}
