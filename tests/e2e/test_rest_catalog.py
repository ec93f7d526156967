"""The served Iceberg REST catalog (issue 13, read side), against the real binary.

A user gives DuckDB or PyIceberg only `http://HOST:PORT/iceberg` (and the bearer token) and
reads every table: no metadata path, no warehouse path. Rows must equal what was sent through
`POST /ingest`, deletion vectors included. Writes through the catalog are refused with the
spec's error shape; unknown names are 404 with the exception types clients map.
"""
import glob
import json
import os
import sqlite3
import struct

import duckdb
import pytest
import requests

from readers import _extension_path, expect, load_json, normalise

TOKEN = "rest-catalog-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ID_NAME = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "name", "data_type": "string", "nullable": True},
]
SERVED = {
    "GET /v1/{prefix}/namespaces",
    "GET /v1/{prefix}/namespaces/{namespace}",
    "HEAD /v1/{prefix}/namespaces/{namespace}",
    "GET /v1/{prefix}/namespaces/{namespace}/tables",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
}


# --- helpers -------------------------------------------------------------------------------
def ingest(server, name, data, operation="insert", headers=None):
    r = requests.post(f"{server.url}/ingest/{name}", headers=headers or {}, timeout=60,
                      json={"operation": operation, "request_mode": "sync", "data": data})
    assert r.status_code == 200, r.text
    return r.json()


def create(server, name, schema, headers=None, **extra):
    r = requests.post(f"{server.url}/tables/{name}", headers=headers or {}, timeout=30,
                      json={"schema": schema, "table_config": {}, **extra})
    assert r.status_code == 201, r.text


def commit(server, name, headers=None):
    r = requests.post(f"{server.url}/tables/{name}/commit", headers=headers or {}, timeout=60)
    assert r.status_code == 200, r.text


def rest_error(r, status, kind):
    """The spec's IcebergErrorResponse: {"error": {"message", "type", "code"}}."""
    assert r.status_code == status, (r.status_code, r.text[:1000])
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["type"] == kind, body
    assert body["error"]["code"] == status, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body["error"]


def duckdb_lake(server, token=None):
    """DuckDB attached to the served catalog, extensions loaded from the PyPI wheels."""
    con = duckdb.connect(config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
    for name in ("httpfs", "avro", "iceberg"):
        con.execute(f"LOAD '{_extension_path(name)}'")
    endpoint = f"{server.url}/iceberg"
    if token is None:
        con.execute(f"ATTACH '' AS lake (TYPE iceberg, ENDPOINT '{endpoint}', AUTHORIZATION_TYPE 'none')")
    else:
        con.execute(f"CREATE SECRET lake_token (TYPE iceberg, TOKEN '{token}')")
        con.execute(f"ATTACH '' AS lake (TYPE iceberg, ENDPOINT '{endpoint}', SECRET lake_token)")
    return con


def rows(result):
    return sorted((tuple(normalise(v) for v in row) for row in result),
                  key=lambda r: tuple((v is None, str(v)) for v in r))


def rest_catalog(server, token=None):
    from pyiceberg.catalog.rest import RestCatalog

    props = {"uri": f"{server.url}/iceberg"}
    if token is not None:
        props["token"] = token
    return RestCatalog("lake", **props)


def pyiceberg_rows(catalog, namespace, table):
    arrow = catalog.load_table((namespace, table)).scan().to_arrow()
    return rows(tuple(r[n] for n in arrow.column_names) for r in arrow.to_pylist())


def keyed_table_with_deletion_vectors(server, headers=None):
    """sales.orders: keyed, committed rows later upserted and deleted, so the snapshot has
    deletion vectors. Returns the rows a reader must see."""
    create(server, "sales.orders", ID_NAME, headers=headers, primary_key=["id"])
    # Few deletes among many rows, so no compaction rewrites them away.
    ingest(server, "sales.orders", [{"id": i, "name": f"v{i}"} for i in range(100)], headers=headers)
    commit(server, "sales.orders", headers=headers)
    ingest(server, "sales.orders", [{"id": 2, "name": "two"}, {"id": 100, "name": "v100"}],
           operation="upsert", headers=headers)
    ingest(server, "sales.orders", [{"id": 5}, {"id": 7}], operation="delete", headers=headers)
    commit(server, "sales.orders", headers=headers)
    info = requests.get(f"{server.url}/tables/sales.orders", headers=headers or {}, timeout=10).json()
    assert info["deleted_rows"] == 3, info  # the upsert and the deletes hit a committed file
    live = {i: f"v{i}" for i in range(100)} | {2: "two", 100: "v100"}
    del live[5], live[7]
    return expect(*sorted(live.items()))


# --- tests ---------------------------------------------------------------------------------
def test_duckdb_attaches_the_whole_warehouse_and_reads_every_table(server):
    want_orders = keyed_table_with_deletion_vectors(server)
    create(server, "sales.events", ID_NAME)
    ingest(server, "sales.events", [{"id": 1, "name": "a"}, {"id": 2, "name": None}])
    create(server, "ops.audit", [{"name": "id", "data_type": "int64", "nullable": False}])
    ingest(server, "ops.audit", [{"id": 42}])
    create(server, "ops.empty", ID_NAME)  # never committed: no snapshot, no rows

    con = duckdb_lake(server)
    try:
        listed = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'lake' ORDER BY ALL"
        ).fetchall()
        assert listed == [("ops", "audit"), ("ops", "empty"), ("sales", "events"), ("sales", "orders")], listed
        assert rows(con.execute("SELECT * FROM lake.sales.orders").fetchall()) == want_orders
        assert rows(con.execute("SELECT * FROM lake.sales.events").fetchall()) == expect((1, "a"), (2, None))
        assert con.execute("SELECT * FROM lake.ops.audit").fetchall() == [(42,)]
        assert con.execute("SELECT count(*) FROM lake.ops.empty").fetchone() == (0,)

        # Later commits are seen by a new query (the catalog serves the current metadata).
        ingest(server, "sales.orders", [{"id": 0}], operation="delete")
        commit(server, "sales.orders")
    finally:
        con.close()
    con = duckdb_lake(server)
    try:
        assert rows(con.execute("SELECT * FROM lake.sales.orders").fetchall()) == [
            r for r in want_orders if r[0] != 0]
    finally:
        con.close()


def test_pyiceberg_rest_catalog_lists_loads_and_scans_with_the_token(make_server):
    server = make_server(["--auth-token", TOKEN])
    want = keyed_table_with_deletion_vectors(server, headers=AUTH)
    create(server, "ops.audit", ID_NAME, headers=AUTH)
    ingest(server, "ops.audit", [{"id": 1, "name": "x"}], headers=AUTH)

    catalog = rest_catalog(server, TOKEN)
    assert sorted(catalog.list_namespaces()) == [("ops",), ("sales",)]
    assert catalog.list_tables("sales") == [("sales", "orders")]
    assert catalog.load_namespace_properties("sales") == {}
    assert catalog.namespace_exists("sales") and not catalog.namespace_exists("nope")
    assert catalog.table_exists(("sales", "orders")) and not catalog.table_exists(("sales", "nope"))

    table = catalog.load_table(("sales", "orders"))
    info = requests.get(f"{server.url}/tables/sales.orders", headers=AUTH, timeout=10).json()
    assert table.metadata_location == info["metadata_location"]
    assert table.metadata.format_version == 3
    assert [f.name for f in table.schema().fields] == ["id", "name"]
    assert pyiceberg_rows(catalog, "sales", "orders") == want
    assert pyiceberg_rows(catalog, "ops", "audit") == expect((1, "x"))

    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    with pytest.raises(NoSuchTableError):
        catalog.load_table(("sales", "nope"))
    with pytest.raises(NoSuchNamespaceError):
        catalog.list_tables("nope")

    # DuckDB with the token as an iceberg secret reads the same rows.
    con = duckdb_lake(server, token=TOKEN)
    try:
        assert rows(con.execute("SELECT * FROM lake.sales.orders").fetchall()) == want
    finally:
        con.close()


def test_writes_through_the_catalog_are_refused(make_server):
    server = make_server(["--auth-token", TOKEN])
    create(server, "sales.orders", ID_NAME, headers=AUTH, primary_key=["id"])
    ingest(server, "sales.orders", [{"id": 1, "name": "a"}], headers=AUTH)
    before = requests.get(f"{server.url}/tables/sales.orders", headers=AUTH, timeout=10).json()

    # PyIceberg sees from the served endpoints that writes are not offered and says so.
    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField

    catalog = rest_catalog(server, TOKEN)
    with pytest.raises(NotImplementedError, match="does not support endpoint"):
        catalog.create_table(("sales", "new"), Schema(NestedField(1, "id", LongType(), required=False)))
    table = catalog.load_table(("sales", "orders"))
    with pytest.raises(NotImplementedError, match="does not support endpoint"):
        table.transaction().set_properties(owner="someone").commit_transaction()
    # (PyIceberg 0.12 cannot write v3 manifests, so an append fails before it reaches the commit.)
    with pytest.raises((NotImplementedError, ValueError)):
        table.append(pa.Table.from_pylist([{"id": 2, "name": "b"}], schema=table.schema().as_arrow()))
    with pytest.raises(NotImplementedError):
        catalog.create_namespace("more")
    with pytest.raises(NotImplementedError):
        catalog.drop_table(("sales", "orders"))

    # A client that ignores the endpoints list is refused by the server, and says why.
    from pyiceberg.catalog.rest import Capability
    from pyiceberg.exceptions import ForbiddenError

    catalog._supported_endpoints |= {Capability.V1_UPDATE_TABLE, Capability.V1_CREATE_TABLE}
    with pytest.raises(ForbiddenError, match="read-only"):
        table.transaction().set_properties(owner="someone").commit_transaction()
    with pytest.raises(ForbiddenError, match="read-only"):
        catalog.create_table(("sales", "new"), Schema(NestedField(1, "id", LongType(), required=False)))

    # Every write route of the spec: 403 with the spec's error shape.
    base = f"{server.url}/iceberg/v1"
    for method, path, body in [
        ("POST", "/namespaces", {"namespace": ["more"]}),
        ("DELETE", "/namespaces/sales", None),
        ("POST", "/namespaces/sales/properties", {"updates": {"a": "b"}}),
        ("POST", "/namespaces/sales/tables", {"name": "new", "schema": {"type": "struct", "fields": []}}),
        ("POST", "/namespaces/sales/tables/orders", {"requirements": [], "updates": []}),
        ("DELETE", "/namespaces/sales/tables/orders?purgeRequested=true", None),
        ("POST", "/namespaces/sales/register", {"name": "x", "metadata-location": "/tmp/x.json"}),
        ("POST", "/namespaces/sales/tables/orders/unregister", None),
        ("POST", "/tables/rename", {"source": {"namespace": ["sales"], "name": "orders"},
                                    "destination": {"namespace": ["sales"], "name": "o2"}}),
        ("POST", "/transactions/commit", {"table-changes": []}),
        ("POST", "/namespaces/sales/views", {"name": "v"}),
        ("DELETE", "/namespaces/sales/views/v", None),
        ("POST", "/views/rename", {}),
        ("POST", "/namespaces/sales/register-view", {}),
    ]:
        r = requests.request(method, base + path, json=body, headers=AUTH, timeout=10)
        error = rest_error(r, 403, "ForbiddenException")
        assert "read-only" in error["message"], error
        # And without the token, the token is checked first.
        rest_error(requests.request(method, base + path, json=body, timeout=10), 401, "NotAuthorizedException")

    after = requests.get(f"{server.url}/tables/sales.orders", headers=AUTH, timeout=10).json()
    assert after["metadata_location"] == before["metadata_location"]
    assert [t["name"] for t in requests.get(f"{server.url}/tables", headers=AUTH, timeout=10).json()["tables"]] == [
        "sales.orders"]


def test_config_404s_401s_head_and_paging(make_server):
    server = make_server(["--auth-token", TOKEN])
    base = f"{server.url}/iceberg/v1"
    for name in ["a.t1", "a.t2", "a.t3", "b.t1", "c.t1"]:
        create(server, name, ID_NAME, headers=AUTH)

    # Config: exactly the served endpoints, no prefix, nothing else to configure.
    config = requests.get(f"{base}/config", headers=AUTH, timeout=10)
    assert config.status_code == 200, config.text
    config = config.json()
    assert config["defaults"] == {} and config["overrides"] == {}, config
    assert set(config["endpoints"]) == SERVED and len(config["endpoints"]) == len(SERVED)
    assert requests.get(f"{base}/config?warehouse=anything", headers=AUTH, timeout=10).json() == config

    # Every route, the config too, needs the token; the 401 has the spec's shape.
    for path in ["/config", "/namespaces", "/namespaces/a", "/namespaces/a/tables", "/namespaces/a/tables/t1"]:
        rest_error(requests.get(base + path, timeout=10), 401, "NotAuthorizedException")
        rest_error(requests.get(base + path, headers={"Authorization": "Bearer wrong"}, timeout=10),
                   401, "NotAuthorizedException")
    assert requests.head(f"{base}/namespaces/a", timeout=10).status_code == 401

    # 404s with the exception types Java and Python clients map.
    rest_error(requests.get(f"{base}/namespaces/nope", headers=AUTH, timeout=10), 404, "NoSuchNamespaceException")
    rest_error(requests.get(f"{base}/namespaces/nope/tables", headers=AUTH, timeout=10), 404,
               "NoSuchNamespaceException")
    rest_error(requests.get(f"{base}/namespaces?parent=nope", headers=AUTH, timeout=10), 404,
               "NoSuchNamespaceException")
    rest_error(requests.get(f"{base}/namespaces/a/tables/nope", headers=AUTH, timeout=10), 404,
               "NoSuchTableException")
    rest_error(requests.get(f"{base}/namespaces/nope/tables/t1", headers=AUTH, timeout=10), 404,
               "NoSuchTableException")
    # A two-level namespace (levels joined by %1F) is never one of ours.
    rest_error(requests.get(f"{base}/namespaces/a%1Ft1", headers=AUTH, timeout=10), 404, "NoSuchNamespaceException")
    rest_error(requests.get(f"{base}/namespaces/a%1Fx/tables/t1", headers=AUTH, timeout=10), 404,
               "NoSuchTableException")
    rest_error(requests.get(f"{base}/views", headers=AUTH, timeout=10), 404, "NotFoundException")
    # A method no route has is answered in the same shape.
    rest_error(requests.put(f"{base}/namespaces", headers=AUTH, timeout=10), 405, "UnsupportedOperationException")

    # HEAD: 204 without a body, or 404.
    for path, status in [("/namespaces/a", 204), ("/namespaces/nope", 404), ("/namespaces/a/tables/t1", 204),
                         ("/namespaces/a/tables/nope", 404), ("/namespaces/b/tables/t2", 404)]:
        r = requests.head(base + path, headers=AUTH, timeout=10)
        assert r.status_code == status, (path, r.status_code)
        assert r.content == b""

    # Namespaces: the top level; a parent that exists has no children.
    r = requests.get(f"{base}/namespaces", headers=AUTH, timeout=10).json()
    assert r == {"namespaces": [["a"], ["b"], ["c"]], "next-page-token": None}, r
    assert requests.get(f"{base}/namespaces?parent=", headers=AUTH, timeout=10).json()["namespaces"] == [
        ["a"], ["b"], ["c"]]
    assert requests.get(f"{base}/namespaces?parent=a", headers=AUTH, timeout=10).json()["namespaces"] == []
    ns = requests.get(f"{base}/namespaces/a", headers=AUTH, timeout=10).json()
    assert ns == {"namespace": ["a"], "properties": {}}, ns

    # Paging: without pageToken everything comes at once; with it, pages of pageSize to the end.
    r = requests.get(f"{base}/namespaces/a/tables?pageSize=1", headers=AUTH, timeout=10).json()
    assert [i["name"] for i in r["identifiers"]] == ["t1", "t2", "t3"] and r["next-page-token"] is None
    seen, token = [], ""
    while token is not None:
        r = requests.get(f"{base}/namespaces/a/tables", params={"pageToken": token, "pageSize": 2},
                         headers=AUTH, timeout=10).json()
        assert len(r["identifiers"]) <= 2
        seen += [(tuple(i["namespace"]), i["name"]) for i in r["identifiers"]]
        token = r["next-page-token"]
    assert seen == [(("a",), "t1"), (("a",), "t2"), (("a",), "t3")]
    seen, token = [], ""
    while token is not None:
        r = requests.get(f"{base}/namespaces", params={"pageToken": token, "pageSize": 1},
                         headers=AUTH, timeout=10).json()
        seen += r["namespaces"]
        token = r["next-page-token"]
    assert seen == [["a"], ["b"], ["c"]]
    for bad in ["0", "-3", "ten"]:
        rest_error(requests.get(f"{base}/namespaces?pageToken=&pageSize={bad}", headers=AUTH, timeout=10),
                   400, "BadRequestException")

    # The LoadTableResult: location, the metadata file's content, the client config.
    r = requests.get(f"{base}/namespaces/a/tables/t1", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    info = requests.get(f"{server.url}/tables/a.t1", headers=AUTH, timeout=10).json()
    assert body["metadata-location"] == info["metadata_location"]
    assert body["metadata"] == load_json(info["metadata_location"])
    assert body["config"] == {}  # a local warehouse needs no settings, and credentials are never served

    # ETag / If-None-Match: an unchanged table is a 304 without a body; a commit changes the tag.
    tag = r.headers["ETag"]
    again = requests.get(f"{base}/namespaces/a/tables/t1", headers={**AUTH, "If-None-Match": tag}, timeout=10)
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == tag, again
    other = requests.get(f"{base}/namespaces/a/tables/t1", headers={**AUTH, "If-None-Match": '"x"'}, timeout=10)
    assert other.status_code == 200 and other.headers["ETag"] == tag
    ingest(server, "a.t1", [{"id": 1, "name": "new"}], headers=AUTH)
    changed = requests.get(f"{base}/namespaces/a/tables/t1", headers={**AUTH, "If-None-Match": tag}, timeout=10)
    assert changed.status_code == 200, changed.status_code
    assert changed.headers["ETag"] != tag
    assert changed.json()["metadata-location"] != body["metadata-location"]


# --- a table that failed to open ------------------------------------------------------------
def _wal_records(path):
    with open(path, "rb") as f:
        data = f.read()
    records, offset = [], 0
    while offset + 16 <= len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        if offset + 16 + length > len(data):
            break
        records.append((offset, length))
        offset += 16 + length
    return records


def test_a_table_that_failed_to_open_is_skipped_in_listings_and_503_when_loaded(make_server):
    """Decision: a damaged table must not break a client listing the whole warehouse (DuckDB
    lists and loads every table), so listings leave it out; loading it by name is 503 (it
    exists, so 404 would invite a client to re-create it)."""
    server = make_server(["--commit-interval-ms", "600000"])
    create(server, "d.bad", ID_NAME)
    create(server, "d.good", ID_NAME)
    for i in range(3):
        r = requests.post(f"{server.url}/ingest/d.bad", timeout=60,
                          json={"operation": "insert", "request_mode": "async", "data": [{"id": i, "name": "x" * 300}]})
        assert r.status_code == 200, r.text
    ingest(server, "d.good", [{"id": 1, "name": "ok"}])
    server.kill()
    con = sqlite3.connect(f"file:{os.path.join(server.data_dir, 'catalog.db')}?mode=ro", uri=True)
    try:
        (table_id,) = con.execute("SELECT id FROM moonlink_tables WHERE name = 'd.bad'").fetchone()
    finally:
        con.close()
    segments = sorted(glob.glob(os.path.join(server.data_dir, "cache", "wal", table_id, "*.wal")))
    damaged = [p for p in segments if len(_wal_records(p)) >= 2]
    assert damaged, segments
    with open(damaged[0], "r+b") as f:  # flip a bit of the first record's length
        f.seek(1)
        byte = f.read(1)[0]
        f.seek(1)
        f.write(bytes([byte ^ 0x01]))
    server.start()
    assert [t for t in server.tables() if t["name"] == "d.bad"][0].get("failed") is True

    base = f"{server.url}/iceberg/v1"
    r = requests.get(f"{base}/namespaces/d/tables", timeout=10).json()
    assert [i["name"] for i in r["identifiers"]] == ["good"], r
    error = rest_error(requests.get(f"{base}/namespaces/d/tables/bad", timeout=10), 503, "ServiceUnavailableException")
    assert "failed to open" in error["message"], error
    assert requests.head(f"{base}/namespaces/d/tables/bad", timeout=10).status_code == 503
    con = duckdb_lake(server)
    try:
        assert con.execute("SELECT * FROM lake.d.good").fetchall() == [(1, "ok")]
    finally:
        con.close()


# --- an S3 warehouse ------------------------------------------------------------------------
def test_an_s3_warehouse_is_read_through_the_catalog_with_the_served_config(make_server, moto):
    """The catalog serves what a reader needs to reach the bucket (endpoint, region, path
    style) and never credentials: PyIceberg reads with the catalog URI and credentials only.

    DuckDB 1.5.5 builds a secret from the served `config` scoped to the table's location and
    uses it instead of the user's own S3 secret, so with no credentials served it is refused
    (403 from S3). Its `ACCESS_DELEGATION_MODE 'none'` skips that and uses the user's S3 secret;
    that secret must then name the endpoint itself."""
    from s3server import ACCESS_KEY, REGION, SECRET_KEY

    moto.bucket("lake")
    # Credentials reach the host through the standard environment, never through the catalog.
    server = make_server(["--warehouse", "s3://lake/wh", *moto.host_args(), "--auth-token", TOKEN],
                         env={"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    want = keyed_table_with_deletion_vectors(server, headers=AUTH)

    r = requests.get(f"{server.url}/iceberg/v1/namespaces/sales/tables/orders", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metadata-location"].startswith("s3://lake/wh/sales/orders/metadata/"), body["metadata-location"]
    assert body["config"] == {"s3.endpoint": moto.endpoint, "s3.region": REGION, "client.region": REGION,
                              "s3.path-style-access": "true"}, body["config"]
    assert not any("secret" in k or "key-id" in k or "token" in k for k in body["config"]), body["config"]

    from pyiceberg.catalog.rest import RestCatalog

    catalog = RestCatalog("lake", uri=f"{server.url}/iceberg", token=TOKEN,
                          **{"s3.access-key-id": ACCESS_KEY, "s3.secret-access-key": SECRET_KEY})
    assert catalog.list_tables("sales") == [("sales", "orders")]
    assert pyiceberg_rows(catalog, "sales", "orders") == want

    con = duckdb.connect(config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
    try:
        for name in ("httpfs", "avro", "iceberg"):
            con.execute(f"LOAD '{_extension_path(name)}'")
        con.execute(f"CREATE SECRET lake_token (TYPE iceberg, TOKEN '{TOKEN}')")
        con.execute(f"""CREATE SECRET lake_s3 (TYPE s3, KEY_ID '{ACCESS_KEY}', SECRET '{SECRET_KEY}',
                        REGION '{REGION}', ENDPOINT '127.0.0.1:{moto.port}', URL_STYLE 'path', USE_SSL false)""")
        con.execute(f"""ATTACH '' AS lake (TYPE iceberg, ENDPOINT '{server.url}/iceberg', SECRET lake_token,
                        ACCESS_DELEGATION_MODE 'none')""")
        assert rows(con.execute("SELECT * FROM lake.sales.orders").fetchall()) == want
    finally:
        con.close()
