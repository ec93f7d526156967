//! The OpenAPI 3.1 document of the HTTP API, generated at compile time from the route
//! attributes and body types in `api.rs` (utoipa) and served at `GET /openapi.json`.
//!
//! `/health` and `/openapi.json` need no token; every other route needs
//! `Authorization: Bearer <token>` when the server runs with `--auth-token`.
//!
//! The `/iceberg/v1/...` operations (tag `iceberg`) are the read side of Apache Iceberg's REST
//! catalog spec, named by its operation ids; they fail with that spec's `IcebergErrorResponse`.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;
use crate::api::iceberg_rest as rest;
use crate::error::ApiError;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The --auth-token the server was started with (required when it listens beyond loopback)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "moonlink-host",
        description = "Ingest inserts, updates and deletes into Apache Iceberg v3 tables. Every failure answers with the error body `{\"error\", \"message\", \"row\", \"column\"}`; 503 and 429 replies carry `Retry-After`.",
    ),
    paths(
        api::health,
        api::openapi_json,
        api::list_tables,
        api::get_table,
        api::create_table,
        api::drop_table,
        api::change_schema,
        api::change_partitioning,
        api::get_schema,
        api::commit_table,
        api::flush_table,
        api::optimize_table,
        api::truncate_table,
        api::ingest,
        api::run_query,
        api::list_plugins,
        crate::status::status,
        crate::status::ready,
        crate::metrics::metrics_text,
        rest::get_config,
        rest::list_namespaces,
        rest::load_namespace,
        rest::namespace_exists,
        rest::list_tables,
        rest::load_table,
        rest::table_exists,
        rest::create_namespace,
        rest::drop_namespace,
        rest::update_properties,
        rest::create_table,
        rest::update_table,
        rest::drop_table,
        rest::register_table,
        rest::unregister_table,
        rest::rename_table,
        rest::commit_transaction,
        rest::create_view,
        rest::replace_view,
        rest::drop_view,
        rest::rename_view,
        rest::register_view,
    ),
    components(schemas(ApiError, rest::IcebergErrorResponse)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "service", description = "Liveness and this document (no token needed)"),
        (name = "tables", description = "Create, inspect, commit, maintain and drop tables"),
        (name = "ingest", description = "Write rows"),
        (name = "query", description = "Read-only SQL over committed and buffered rows"),
        (name = "plugins", description = "Source plugins"),
        (name = "iceberg", description = "The Iceberg REST catalog, read only (Apache Iceberg's rest-catalog-open-api.yaml); failures answer `{\"error\": {\"message\", \"type\", \"code\"}}`"),
    )
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document_json() -> String {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| {
            ApiDoc::openapi()
                .to_pretty_json()
                .unwrap_or_else(|e| format!("{{\"error\": \"internal\", \"message\": \"{e}\"}}"))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(&document_json()).expect("the document is JSON")
    }

    #[test]
    fn every_route_is_documented() {
        let doc = doc();
        let paths = doc["paths"].as_object().expect("paths");
        for (path, methods) in [
            ("/health", &["get"][..]),
            ("/openapi.json", &["get"]),
            ("/tables", &["get"]),
            ("/tables/{name}", &["get", "post", "delete"]),
            ("/tables/{name}/schema", &["post"]),
            ("/tables/{name}/partitioning", &["put"]),
            ("/schema/{database}/{table}", &["get"]),
            ("/tables/{name}/commit", &["post"]),
            ("/tables/{name}/flush", &["post"]),
            ("/tables/{name}/optimize", &["post"]),
            ("/tables/{name}/truncate", &["post"]),
            ("/ingest/{name}", &["post"]),
            ("/query", &["post"]),
            ("/plugins", &["get"]),
            ("/ready", &["get"]),
            ("/status", &["get"]),
            ("/metrics", &["get"]),
            ("/iceberg/v1/config", &["get"]),
            ("/iceberg/v1/namespaces", &["get", "post"]),
            (
                "/iceberg/v1/namespaces/{namespace}",
                &["get", "head", "delete"],
            ),
            ("/iceberg/v1/namespaces/{namespace}/properties", &["post"]),
            (
                "/iceberg/v1/namespaces/{namespace}/tables",
                &["get", "post"],
            ),
            (
                "/iceberg/v1/namespaces/{namespace}/tables/{table}",
                &["get", "head", "post", "delete"],
            ),
            ("/iceberg/v1/namespaces/{namespace}/register", &["post"]),
            (
                "/iceberg/v1/namespaces/{namespace}/tables/{table}/unregister",
                &["post"],
            ),
            ("/iceberg/v1/tables/rename", &["post"]),
            ("/iceberg/v1/transactions/commit", &["post"]),
            ("/iceberg/v1/namespaces/{namespace}/views", &["post"]),
            (
                "/iceberg/v1/namespaces/{namespace}/views/{view}",
                &["post", "delete"],
            ),
            ("/iceberg/v1/views/rename", &["post"]),
            (
                "/iceberg/v1/namespaces/{namespace}/register-view",
                &["post"],
            ),
        ] {
            for method in methods {
                assert!(
                    paths[path][method].is_object(),
                    "{method} {path} is not documented"
                );
            }
        }
        assert_eq!(paths.len(), 31, "a documented route the router lacks?");
    }

    #[test]
    fn protected_routes_document_401_and_public_ones_need_no_token() {
        let doc = doc();
        for (path, methods) in doc["paths"].as_object().expect("paths") {
            for (method, op) in methods.as_object().expect("methods") {
                let public = matches!(path.as_str(), "/health" | "/ready" | "/openapi.json");
                if public {
                    assert_eq!(op["security"], serde_json::json!([{}]), "{method} {path}");
                } else {
                    assert!(
                        op["responses"]["401"].is_object(),
                        "{method} {path} lacks 401"
                    );
                }
            }
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }

    #[test]
    fn the_iceberg_catalog_documents_its_own_error_shape() {
        let doc = doc();
        let paths = doc["paths"].as_object().expect("paths");
        for (path, methods) in paths.iter().filter(|(p, _)| p.starts_with("/iceberg/")) {
            for (method, op) in methods.as_object().expect("methods") {
                let unauthorized = &op["responses"]["401"];
                if method == "head" {
                    assert!(
                        unauthorized["content"].is_null(),
                        "{method} {path}: HEAD has no body"
                    );
                } else {
                    let schema = &unauthorized["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/IcebergErrorResponse",
                        "{method} {path}"
                    );
                }
                if matches!(method.as_str(), "post" | "delete") {
                    assert!(
                        op["responses"]["403"].is_object(),
                        "{method} {path} refused"
                    );
                }
            }
        }
        let error = &doc["components"]["schemas"]["IcebergErrorModel"]["properties"];
        for field in ["message", "type", "code"] {
            assert!(error[field].is_object(), "ErrorModel lacks {field}");
        }
    }

    #[test]
    fn ingest_documents_bodies_parameters_and_limits() {
        let doc = doc();
        let op = &doc["paths"]["/ingest/{name}"]["post"];
        let content = &op["requestBody"]["content"];
        assert!(content["application/json"].is_object());
        assert!(content["application/x-ndjson"].is_object());
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(params, ["name", "operation", "request_mode"]);
        for status in ["400", "404", "409", "413", "422", "503"] {
            assert!(op["responses"][status].is_object(), "ingest lacks {status}");
        }
        assert!(op["responses"]["503"]["headers"]["Retry-After"].is_object());
        let error = &doc["components"]["schemas"]["ErrorBody"]["properties"];
        for field in ["error", "message", "row", "column"] {
            assert!(error[field].is_object(), "ErrorBody lacks {field}");
        }
    }
}
