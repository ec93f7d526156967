//! Read-only SQL over the Postgres wire protocol (`--pg-listen`), so `psql`, psycopg, JDBC
//! tools and dashboards can query the tables' live rows (`moonlink-query`).
//!
//! - Protocol: the `pgwire` crate (startup, simple and extended query); Arrow values are
//!   encoded by `arrow-pg` in the text or binary format the client asks for. `uuid` columns
//!   are sent as `uuid` (text format) or text.
//! - Authentication: with `--auth-token`, a cleartext password equal to the token (compared
//!   in constant time, any user name); without a token (loopback only) no password is asked.
//! - Session statements (`BEGIN`, `COMMIT`, `ROLLBACK`, `SET`, `RESET`, `DISCARD`) are
//!   accepted and ignored: every query reads the newest rows, there is nothing to change.
//! - Cancel requests (psql's Ctrl-C, psycopg's `cancel()`) abort the connection's running
//!   query (SQLSTATE 57014; `moonlink_queries_total{outcome="cancelled"}`).
//! - Extended-protocol parameters (`$1`, ...) sent as text are substituted as quoted literals
//!   before planning (DataFusion coerces them to the compared column's type).

use std::fmt::Debug;
use std::sync::Arc;

use arrow_schema::{DataType, Schema};
use async_trait::async_trait;
use futures::sink::{Sink, SinkExt};
use futures::stream;
use moonlink_query::{output, QueryEngine, QueryError, QueryResult};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{NoopQueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionGuard, ConnectionHandle, ConnectionManager,
    PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;

/// Accepts Postgres connections on `listener` until the process exits.
pub async fn serve(listener: TcpListener, query: QueryEngine, token: Option<String>) {
    let connections = Arc::new(ConnectionManager::new());
    let handlers = Arc::new(Handlers {
        cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
        backend: Arc::new(Backend {
            query,
            parser: Arc::new(NoopQueryParser::new()),
        }),
        startup: Arc::new(TokenStartup {
            token,
            pids: RandomPidSecretKeyGenerator::default(),
            connections,
        }),
    });
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "postgres wire: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let handlers = handlers.clone();
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                tracing::debug!(peer = %peer, error = %e, "postgres wire connection ended");
            }
        });
    }
}

struct Handlers {
    backend: Arc<Backend>,
    startup: Arc<TokenStartup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.backend.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.backend.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// Startup: a cleartext password checked against the token, or none without a token.
struct TokenStartup {
    token: Option<String>,
    pids: RandomPidSecretKeyGenerator,
    /// Connections by (pid, secret key), so a cancel request finds its query.
    connections: Arc<ConnectionManager>,
}

impl TokenStartup {
    async fn finish<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        // pgwire races each query against the handle's cancel signal (dropping the query's
        // future aborts it); the guard unregisters the connection when it ends.
        let (handle, guard) = self.connections.register(pid, secret);
        client
            .session_extensions()
            .insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert::<ConnectionGuard>(guard);
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = format!("15.0 (moonlink-host {})", env!("CARGO_PKG_VERSION"));
        parameters.default_transaction_read_only = true;
        finish_authentication(client, &parameters).await
    }
}

#[async_trait]
impl StartupHandler for TokenStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.token.is_none() {
                    return self.finish(client).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let password = password.into_password()?;
                let expected = self.token.as_deref().unwrap_or_default();
                if !crate::api::token_matches(Some(&password.password), expected) {
                    let user = client.metadata().get("user").cloned().unwrap_or_default();
                    return Err(PgWireError::InvalidPassword(user));
                }
                self.finish(client).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Runs queries for both protocols.
struct Backend {
    query: QueryEngine,
    parser: Arc<NoopQueryParser>,
}

/// A statement that changes nothing here, answered with its own tag.
fn session_statement(sql: &str) -> Option<Response> {
    let first = sql.split_whitespace().next()?.to_ascii_uppercase();
    let first = first.trim_end_matches(';');
    match first {
        "BEGIN" | "START" => Some(Response::TransactionStart(Tag::new("BEGIN"))),
        "COMMIT" | "END" => Some(Response::TransactionEnd(Tag::new("COMMIT"))),
        "ROLLBACK" | "ABORT" => Some(Response::TransactionEnd(Tag::new("ROLLBACK"))),
        "SET" | "RESET" => Some(Response::Execution(Tag::new("SET"))),
        "DISCARD" => Some(Response::Execution(Tag::new("DISCARD ALL"))),
        _ => None,
    }
}

/// A query error as Postgres reports it (SQLSTATE by kind).
fn pg_error(e: QueryError) -> PgWireError {
    let code = match &e {
        QueryError::Sql(_) => "42601",
        QueryError::MemoryExceeded { .. } => "53200",
        QueryError::Timeout(_) => "57014",
        QueryError::UnknownSnapshot { .. } => "42P01",
        QueryError::Encode { .. } => "0A000",
        QueryError::Engine(_) | QueryError::Internal(_) => "XX000",
    };
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        e.to_string(),
    )))
}

/// Column descriptions for `schema` in `format`; `uuid` columns are `uuid` in text format.
fn fields(schema: &Schema, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    let mut fields = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let format = format.format_for(i);
        let pg_type = match field.data_type() {
            DataType::FixedSizeBinary(16) if format == FieldFormat::Text => Type::UUID,
            DataType::FixedSizeBinary(16) => Type::TEXT,
            _ => arrow_pg::datatypes::field_into_pg_type(field)?,
        };
        fields.push(FieldInfo::new(
            field.name().clone(),
            None,
            None,
            pg_type,
            format,
        ));
    }
    Ok(fields)
}

/// The rows of `result` as a query response.
fn respond(result: QueryResult, format: &Format) -> PgWireResult<Response> {
    let fields = Arc::new(fields(&result.schema, format)?);
    let mut rows = Vec::new();
    for batch in &result.batches {
        let batch = output::uuids_as_text(batch).map_err(pg_error)?;
        rows.extend(arrow_pg::datatypes::encode_recordbatch(
            fields.clone(),
            batch,
        ));
    }
    Ok(Response::Query(QueryResponse::new(
        fields,
        stream::iter(rows),
    )))
}

/// `sql` without the Postgres-only spellings psql's catalog queries (`\dt PATTERN`) use
/// where plain SQL means the same here: the default collation, and `OPERATOR(pg_catalog.op)`
/// for a regex operator.
fn plain_sql(sql: &str) -> String {
    let mut out = sql.replace(" COLLATE pg_catalog.default", "");
    for op in ["!~*", "!~", "~*", "~"] {
        out = out.replace(&format!("OPERATOR(pg_catalog.{op})"), op);
    }
    out
}

impl Backend {
    async fn run(&self, sql: &str, format: &Format) -> PgWireResult<Response> {
        if let Some(response) = session_statement(sql) {
            return Ok(response);
        }
        let sql = plain_sql(sql);
        let result = self.query.query(&sql, None).await.map_err(pg_error)?;
        respond(result, format)
    }
}

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Ok(vec![self.run(query, &Format::UnifiedText).await?])
    }
}

/// The highest `$n` placeholder in `sql`.
fn placeholders(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut highest = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let digits: String = sql[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(n) = digits.parse::<usize>() {
                highest = highest.max(n);
            }
            i += 1 + digits.len();
        } else {
            i += 1;
        }
    }
    highest
}

/// `sql` with `$1..$n` replaced by `values` (already SQL literals), highest first so `$1`
/// never eats the start of `$10`.
fn substitute(sql: &str, values: &[String]) -> String {
    let mut out = sql.to_string();
    for (i, value) in values.iter().enumerate().rev() {
        out = out.replace(&format!("${}", i + 1), value);
    }
    out
}

/// A quoted SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The portal's parameters as SQL literals (text format only).
fn parameters(portal: &Portal<String>) -> PgWireResult<Vec<String>> {
    let mut values = Vec::with_capacity(portal.parameters.len());
    for (i, value) in portal.parameters.iter().enumerate() {
        let Some(bytes) = value else {
            values.push("NULL".into());
            continue;
        };
        if portal.parameter_format.format_for(i) == FieldFormat::Binary {
            return Err(pg_error(QueryError::Sql(
                "binary-format parameters are not supported: send parameters as text".into(),
            )));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| {
            pg_error(QueryError::Sql(format!(
                "parameter ${} is not UTF-8",
                i + 1
            )))
        })?;
        values.push(literal(text));
    }
    Ok(values)
}

#[async_trait]
impl ExtendedQueryHandler for Backend {
    type Statement = String;
    type QueryParser = NoopQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let sql = substitute(&portal.statement.statement, &parameters(portal)?);
        if sql.trim().trim_matches(';').trim().is_empty() {
            return Ok(Response::EmptyQuery);
        }
        self.run(&sql, &portal.result_column_format).await
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        statement: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let count = placeholders(&statement.statement).max(statement.parameter_types.len());
        let types = (0..count)
            .map(|i| {
                statement
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        let nulls = vec!["NULL".to_string(); count];
        let fields = self
            .describe(&substitute(&statement.statement, &nulls))
            .await?;
        Ok(DescribeStatementResponse::new(types, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let sql = substitute(&portal.statement.statement, &parameters(portal)?);
        let schema = self.describe_schema(&sql).await?;
        Ok(DescribePortalResponse::new(fields(
            &schema,
            &portal.result_column_format,
        )?))
    }
}

impl Backend {
    async fn describe_schema(&self, sql: &str) -> PgWireResult<Schema> {
        if sql.trim().is_empty() || session_statement(sql).is_some() {
            return Ok(Schema::empty());
        }
        let schema = self
            .query
            .describe(&plain_sql(sql))
            .await
            .map_err(pg_error)?;
        Ok(schema.as_ref().clone())
    }

    /// Result columns of `sql` in text format (what a statement description reports).
    async fn describe(&self, sql: &str) -> PgWireResult<Vec<FieldInfo>> {
        fields(&self.describe_schema(sql).await?, &Format::UnifiedText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_substituted_highest_first() {
        let sql = "SELECT * FROM t WHERE a = $1 AND b = $10 OR c = $2";
        assert_eq!(placeholders(sql), 10);
        let values: Vec<String> = (1..=10).map(|i| literal(&format!("v{i}'"))).collect();
        assert_eq!(
            substitute(sql, &values),
            "SELECT * FROM t WHERE a = 'v1''' AND b = 'v10''' OR c = 'v2'''"
        );
        assert!(session_statement("  begin").is_some());
        assert_eq!(
            plain_sql("WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default"),
            "WHERE c.relname ~ '^(t)$'"
        );
        assert!(session_statement("SELECT 1").is_none());
    }
}
