//! The spec's write routes: all answered 403 `ForbiddenException` (a status every write
//! operation of the spec allows), because only moonlink-host writes its tables. The request
//! body is never read.

use axum::http::{Method, StatusCode, Uri};

use super::model::{RestError, WriteRefused};

/// The handler of every refused route.
pub(crate) async fn refuse_write(method: Method, uri: Uri) -> RestError {
    RestError::new(
        StatusCode::FORBIDDEN,
        "ForbiddenException",
        format!(
            "{method} {}: this catalog is read-only; its tables are created and written by \
             moonlink-host only (POST /tables/{{name}}, POST /ingest/{{name}})",
            uri.path()
        ),
    )
}

/// One OpenAPI operation per refused route (utoipa needs a function per operation; these
/// only describe, `refuse_write` answers).
macro_rules! refused_operations {
    ($($name:ident: $method:ident $path:literal ($($param:literal),*) $operation:literal;)*) => {$(
        #[doc = concat!("Spec `", $operation, "`: refused.")]
        #[utoipa::path($method, path = $path, tag = "iceberg", operation_id = $operation,
            description = concat!("Spec `", $operation, "`: refused, tables are written by moonlink-host only."),
            params($(($param = String, Path, description = "As in the Iceberg REST spec")),*),
            responses(WriteRefused))]
        #[allow(dead_code)]
        pub(crate) fn $name() {}
    )*};
}

refused_operations! {
    create_namespace: post "/iceberg/v1/namespaces" () "createNamespace";
    drop_namespace: delete "/iceberg/v1/namespaces/{namespace}" ("namespace") "dropNamespace";
    update_properties: post "/iceberg/v1/namespaces/{namespace}/properties" ("namespace") "updateProperties";
    create_table: post "/iceberg/v1/namespaces/{namespace}/tables" ("namespace") "createTable";
    update_table: post "/iceberg/v1/namespaces/{namespace}/tables/{table}" ("namespace", "table") "updateTable";
    drop_table: delete "/iceberg/v1/namespaces/{namespace}/tables/{table}" ("namespace", "table") "dropTable";
    register_table: post "/iceberg/v1/namespaces/{namespace}/register" ("namespace") "registerTable";
    unregister_table: post "/iceberg/v1/namespaces/{namespace}/tables/{table}/unregister" ("namespace", "table") "unregisterTable";
    rename_table: post "/iceberg/v1/tables/rename" () "renameTable";
    commit_transaction: post "/iceberg/v1/transactions/commit" () "commitTransaction";
    create_view: post "/iceberg/v1/namespaces/{namespace}/views" ("namespace") "createView";
    replace_view: post "/iceberg/v1/namespaces/{namespace}/views/{view}" ("namespace", "view") "replaceView";
    drop_view: delete "/iceberg/v1/namespaces/{namespace}/views/{view}" ("namespace", "view") "dropView";
    rename_view: post "/iceberg/v1/views/rename" () "renameView";
    register_view: post "/iceberg/v1/namespaces/{namespace}/register-view" ("namespace") "registerView";
}
