//! AWS Glue Data Catalog, the way Iceberg's `GlueCatalog` writes it: one Glue database per
//! namespace, one Glue table per Iceberg table with parameters `table_type=ICEBERG`,
//! `metadata_location` and `previous_metadata_location`.
//!
//! A small client over `reqwest` (the one `object_store` already brings, rustls) signed with
//! `aws-sigv4`, for the six JSON calls we need: `aws-sdk-glue` is ~35 MB of generated source
//! and too slow to build on CI's 2 cores (ARCHITECTURE.md has the numbers).
//!
//! Our bookkeeping lives in the Glue table's own parameters (`moonlink.owner`, `.name`, `.id`,
//! `.schema`, `.options`), so a schema change and its pointer swap are one `UpdateTable`, and
//! a host lists the tables whose `moonlink.owner` is its host id. The swap is optimistic:
//! the pointer must still be the expected one (checked on `GetTable`) and `UpdateTable`
//! carries the `VersionId` that `GetTable` returned, so Glue refuses it if anyone updated the
//! table in between (`ConcurrentModificationException`) — both are a commit conflict.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::{CatalogBackend, CatalogEntry};
use crate::error::{EngineError, Result};

const OWNER: &str = "moonlink.owner";
const NAME: &str = "moonlink.name";
const ID: &str = "moonlink.id";
const SCHEMA: &str = "moonlink.schema";
const OPTIONS: &str = "moonlink.options";

/// The Glue catalog of one region (or a test endpoint).
pub struct GlueCatalog {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: aws_credential_types::Credentials,
    owner: String,
}

/// A failed Glue call: the error type (`EntityNotFoundException`, ...) and its message.
#[derive(Debug)]
struct GlueError {
    kind: String,
    message: String,
}

impl GlueError {
    fn into_engine(self) -> EngineError {
        EngineError::Catalog(format!("glue: {}: {}", self.kind, self.message))
    }
}

type GlueResult<T> = std::result::Result<T, GlueError>;

fn transport(e: impl std::fmt::Display) -> GlueError {
    GlueError {
        kind: "request failed".into(),
        message: e.to_string(),
    }
}

/// A failed HTTP exchange, with its causes (reqwest's own message omits "connection refused").
fn http_error(e: reqwest::Error) -> GlueError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    transport(message)
}

impl GlueCatalog {
    /// Reads credentials from the standard AWS environment and checks the endpoint answers.
    pub async fn connect(
        region: &str,
        endpoint: Option<&str>,
        owner: String,
    ) -> Result<GlueCatalog> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (Some(key), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(EngineError::Catalog(
                "AWS credentials missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                 (and AWS_SESSION_TOKEN for temporary credentials)"
                    .into(),
            ));
        };
        let credentials = aws_credential_types::Credentials::new(
            key,
            secret,
            env("AWS_SESSION_TOKEN"),
            None,
            "environment",
        );
        GlueCatalog::connect_with(region, endpoint, owner, credentials).await
    }

    /// [`GlueCatalog::connect`] with the credentials given.
    async fn connect_with(
        region: &str,
        endpoint: Option<&str>,
        owner: String,
        credentials: aws_credential_types::Credentials,
    ) -> Result<GlueCatalog> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| http_error(e).into_engine())?;
        let catalog = GlueCatalog {
            http,
            endpoint: endpoint
                .map(str::to_string)
                .unwrap_or_else(|| format!("https://glue.{region}.amazonaws.com")),
            region: region.to_string(),
            credentials,
            owner,
        };
        // Reachable, and the credentials are accepted.
        catalog
            .call("GetDatabases", json!({ "MaxResults": 1 }))
            .await
            .map_err(GlueError::into_engine)?;
        Ok(catalog)
    }

    /// One signed Glue JSON call.
    async fn call(&self, action: &str, body: Value) -> GlueResult<Value> {
        let body = serde_json::to_vec(&body).map_err(transport)?;
        let url = format!("{}/", self.endpoint);
        let target = format!("AWSGlue.{action}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let identity = self.credentials.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("glue")
            .time(SystemTime::now())
            .settings(aws_sigv4::http_request::SigningSettings::default())
            .build()
            .map_err(transport)?
            .into();
        let signable = aws_sigv4::http_request::SignableRequest::new(
            "POST",
            url.as_str(),
            headers.iter().copied(),
            aws_sigv4::http_request::SignableBody::Bytes(&body),
        )
        .map_err(transport)?;
        let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
            .map_err(transport)?
            .into_parts();
        let mut request = self.http.post(&url);
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.map_err(http_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http_error)?;
        let value: Value = if bytes.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&bytes).map_err(|e| GlueError {
                kind: format!("HTTP {status}"),
                message: format!("unreadable answer: {e}"),
            })?
        };
        if status.is_success() {
            return Ok(value);
        }
        let kind = value["__type"]
            .as_str()
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .unwrap_or_else(|| format!("HTTP {status}"));
        let message = value["message"]
            .as_str()
            .or(value["Message"].as_str())
            .unwrap_or_default()
            .to_string();
        Err(GlueError { kind, message })
    }

    async fn get_table(&self, namespace: &str, table: &str) -> GlueResult<Option<Value>> {
        match self
            .call(
                "GetTable",
                json!({ "DatabaseName": namespace, "Name": table }),
            )
            .await
        {
            Ok(mut v) => Ok(Some(v["Table"].take())),
            Err(e) if e.kind == "EntityNotFoundException" => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn refuse(&self, namespace: &str, table: &str, existing: &Value) -> EngineError {
        let identifier = format!("{namespace}.{table}");
        match existing["Parameters"][OWNER].as_str() {
            Some(owner) if owner == self.owner => EngineError::TableExists(identifier),
            Some(owner) => EngineError::TableRegisteredElsewhere {
                table: identifier,
                owner: format!("moonlink-host {owner}"),
            },
            None => EngineError::TableRegisteredElsewhere {
                table: identifier,
                owner: "another writer (not moonlink-host)".into(),
            },
        }
    }

    /// The table as this host owns it, with its `VersionId`; a conflict if the pointer moved
    /// or another host owns it, `TableNotFound` if it is gone.
    async fn owned_table(&self, namespace: &str, table: &str, expected: &str) -> Result<Value> {
        let identifier = format!("{namespace}.{table}");
        let Some(current) = self
            .get_table(namespace, table)
            .await
            .map_err(GlueError::into_engine)?
        else {
            return Err(EngineError::CommitConflict(identifier));
        };
        let params = &current["Parameters"];
        if params[OWNER].as_str() != Some(self.owner.as_str())
            || params["metadata_location"].as_str() != Some(expected)
        {
            return Err(EngineError::CommitConflict(identifier));
        }
        Ok(current)
    }

    /// `UpdateTable` with the parameters changed, guarded by the table's `VersionId`.
    async fn update(
        &self,
        namespace: &str,
        current: Value,
        changes: &[(&str, &str)],
    ) -> Result<()> {
        let mut input = Map::new();
        // TableInput accepts only these of the fields GetTable returns.
        for key in [
            "Name",
            "Description",
            "Owner",
            "Retention",
            "StorageDescriptor",
            "PartitionKeys",
            "TableType",
            "Parameters",
        ] {
            if let Some(v) = current.get(key) {
                input.insert(key.to_string(), v.clone());
            }
        }
        let mut params = current["Parameters"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (k, v) in changes {
            params.insert(k.to_string(), Value::String(v.to_string()));
        }
        input.insert("Parameters".into(), Value::Object(params));
        let mut body = json!({ "DatabaseName": namespace, "TableInput": input });
        if let Some(version) = current["VersionId"].as_str() {
            body["VersionId"] = Value::String(version.to_string());
        }
        match self.call("UpdateTable", body).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind == "ConcurrentModificationException" => {
                let table = current["Name"].as_str().unwrap_or_default();
                Err(EngineError::CommitConflict(format!("{namespace}.{table}")))
            }
            Err(e) => Err(e.into_engine()),
        }
    }

    /// Every page of a paginated list call (`key`: the array in each answer).
    async fn all_pages(&self, action: &str, mut body: Value, key: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        loop {
            let mut page = self
                .call(action, body.clone())
                .await
                .map_err(GlueError::into_engine)?;
            if let Some(Value::Array(list)) = page.get_mut(key).map(Value::take) {
                items.extend(list);
            }
            match page["NextToken"].as_str().filter(|t| !t.is_empty()) {
                Some(token) => body["NextToken"] = Value::String(token.to_string()),
                None => return Ok(items),
            }
        }
    }
}

#[async_trait]
impl CatalogBackend for GlueCatalog {
    async fn create(&self, entry: &CatalogEntry) -> Result<()> {
        match self
            .call(
                "CreateDatabase",
                json!({ "DatabaseInput": { "Name": entry.namespace } }),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind == "AlreadyExistsException" => {}
            Err(e) => return Err(e.into_engine()),
        }
        let location = entry
            .metadata_location
            .rsplit_once("/metadata/")
            .map_or(entry.metadata_location.as_str(), |(root, _)| root);
        let parameters: BTreeMap<&str, &str> = [
            ("table_type", "ICEBERG"),
            ("metadata_location", entry.metadata_location.as_str()),
            (OWNER, self.owner.as_str()),
            (NAME, entry.name.as_str()),
            (ID, entry.id.as_str()),
            (SCHEMA, entry.schema_json.as_str()),
            (OPTIONS, entry.options_json.as_str()),
        ]
        .into();
        let body = json!({
            "DatabaseName": entry.namespace,
            "TableInput": {
                "Name": entry.table,
                "TableType": "EXTERNAL_TABLE",
                "Parameters": parameters,
                "StorageDescriptor": { "Location": location },
            }
        });
        match self.call("CreateTable", body).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind == "AlreadyExistsException" => {
                let existing = self
                    .get_table(&entry.namespace, &entry.table)
                    .await
                    .map_err(GlueError::into_engine)?
                    .unwrap_or_default();
                Err(self.refuse(&entry.namespace, &entry.table, &existing))
            }
            Err(e) => Err(e.into_engine()),
        }
    }

    async fn list(&self) -> Result<Vec<CatalogEntry>> {
        let mut entries = Vec::new();
        for database in self
            .all_pages("GetDatabases", json!({}), "DatabaseList")
            .await?
        {
            let Some(namespace) = database["Name"].as_str() else {
                continue;
            };
            let tables = self
                .all_pages(
                    "GetTables",
                    json!({ "DatabaseName": namespace }),
                    "TableList",
                )
                .await?;
            for table in tables {
                let p = &table["Parameters"];
                if p[OWNER].as_str() != Some(self.owner.as_str()) {
                    continue;
                }
                let text = |key: &str| p[key].as_str().unwrap_or_default().to_string();
                entries.push(CatalogEntry {
                    name: text(NAME),
                    id: text(ID),
                    namespace: namespace.to_string(),
                    table: table["Name"].as_str().unwrap_or_default().to_string(),
                    schema_json: text(SCHEMA),
                    options_json: p[OPTIONS].as_str().unwrap_or("{}").to_string(),
                    metadata_location: text("metadata_location"),
                });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    async fn swap_metadata(
        &self,
        namespace: &str,
        table: &str,
        expected: &str,
        new_location: &str,
    ) -> Result<()> {
        let current = self.owned_table(namespace, table, expected).await?;
        self.update(
            namespace,
            current,
            &[
                ("metadata_location", new_location),
                ("previous_metadata_location", expected),
            ],
        )
        .await
    }

    async fn swap_schema(
        &self,
        entry: &CatalogEntry,
        expected: &str,
        new_location: &str,
    ) -> Result<()> {
        let current = self
            .owned_table(&entry.namespace, &entry.table, expected)
            .await?;
        self.update(
            &entry.namespace,
            current,
            &[
                ("metadata_location", new_location),
                ("previous_metadata_location", expected),
                (SCHEMA, entry.schema_json.as_str()),
            ],
        )
        .await
    }

    async fn remove(&self, entry: &CatalogEntry) -> Result<()> {
        let Some(current) = self
            .get_table(&entry.namespace, &entry.table)
            .await
            .map_err(GlueError::into_engine)?
        else {
            return Ok(());
        };
        // Only a table this host owns is deleted.
        if current["Parameters"][OWNER].as_str() != Some(self.owner.as_str()) {
            return Ok(());
        }
        match self
            .call(
                "DeleteTable",
                json!({ "DatabaseName": entry.namespace, "Name": entry.table }),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind == "EntityNotFoundException" => Ok(()),
            Err(e) => Err(e.into_engine()),
        }
    }
}

#[cfg(test)]
#[path = "glue_tests.rs"]
mod tests;
