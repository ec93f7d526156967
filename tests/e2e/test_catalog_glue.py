"""AWS Glue as the catalog (`--catalog glue://REGION?endpoint=...`), served by moto: PyIceberg's
GlueCatalog loads and reads what the host wrote; the host keeps its tables across restarts."""
import subprocess

import pytest
import requests

from readers import expect
from s3server import ACCESS_KEY, REGION, SECRET_KEY

SCHEMA = [
    {"name": "id", "data_type": "int64", "nullable": False},
    {"name": "name", "data_type": "string", "nullable": True},
]


def glue_url(moto):
    return f"glue://{REGION}?endpoint={moto.endpoint}"


def glue_catalog(moto):
    from pyiceberg.catalog.glue import GlueCatalog

    return GlueCatalog("glue", **{
        "glue.endpoint": moto.endpoint,
        "glue.region": REGION,
        "glue.access-key-id": ACCESS_KEY,
        "glue.secret-access-key": SECRET_KEY,
        **moto.pyiceberg_props(),
    })


def rows(catalog, namespace, table):
    arrow = catalog.load_table((namespace, table)).scan().to_arrow()
    return expect(*(tuple(r[n] for n in arrow.column_names) for r in arrow.to_pylist()))


def s3_warehouse_landed():
    log = subprocess.run(["git", "log", "--oneline", "-i", "--grep", "S3 warehouse"], capture_output=True,
                         text=True).stdout
    return bool(log.strip())


@pytest.fixture
def glue_host(make_server, moto):
    def make(extra=(), data_dir=None):
        return make_server(["--catalog", glue_url(moto), *extra], data_dir=data_dir, env=moto.env())
    return make


def test_pyiceberg_glue_catalog_reads_plain_and_keyed_tables(glue_host, moto):
    server = glue_host()
    server.create_table("shop.events", SCHEMA)
    server.ingest("shop.events", [{"id": i, "name": f"e{i}"} for i in range(4)])
    server.create_table("shop.items", SCHEMA, primary_key=["id"])
    server.ingest("shop.items", [{"id": i, "name": f"i{i}"} for i in range(5)])
    server.ingest("shop.items", [{"id": 1, "name": "one"}], operation="upsert")
    server.ingest("shop.items", [{"id": 3}], operation="delete")
    server.commit("shop.items")

    glue = moto.client("glue")
    table = glue.get_table(DatabaseName="shop", Name="items")["Table"]
    params = table["Parameters"]
    assert params["table_type"] == "ICEBERG"
    assert params["metadata_location"] == server.table("shop.items")["metadata_location"]
    assert params["previous_metadata_location"]

    catalog = glue_catalog(moto)
    assert sorted(catalog.list_tables("shop")) == [("shop", "events"), ("shop", "items")]
    assert rows(catalog, "shop", "events") == expect(*[(i, f"e{i}") for i in range(4)])
    assert rows(catalog, "shop", "items") == expect((0, "i0"), (1, "one"), (2, "i2"), (4, "i4"))

    # Restart: the host finds its tables in Glue and keeps writing them.
    server.restart()
    assert sorted(t["name"] for t in server.tables()) == ["shop.events", "shop.items"]
    server.ingest("shop.events", [{"id": 10, "name": "ten"}])
    assert (10, "ten") in rows(glue_catalog(moto), "shop", "events")

    # A second host on the same Glue catalog sees none of them and may not take one.
    other = glue_host()
    assert other.tables() == []
    r = requests.post(f"{other.url}/tables/shop.items", json={"schema": SCHEMA}, timeout=30)
    assert r.status_code == 409 and r.json()["error"] == "table_registered_elsewhere", r.text

    # Someone else moves the pointer (back to the previous version): the host's next commit is
    # refused by the compare-and-swap, loudly, and never overwrites the other writer's pointer.
    events = glue.get_table(DatabaseName="shop", Name="events")["Table"]["Parameters"]
    previous = events["previous_metadata_location"]
    glue.update_table(DatabaseName="shop", TableInput={
        "Name": "events", "TableType": "EXTERNAL_TABLE",
        "Parameters": {**events, "metadata_location": previous}})
    server.ingest("shop.events", [{"id": 11}], mode="async")
    r = requests.post(f"{server.url}/tables/shop.events/commit", timeout=60)
    assert "catalog compare-and-swap lost" in server.read_log()
    now = glue.get_table(DatabaseName="shop", Name="events")["Table"]["Parameters"]["metadata_location"]
    if r.status_code >= 400:
        assert "commit conflict" in r.json()["message"], r.text
        assert now == previous
    else:
        # Rebased onto the other writer's state (issue 13, other writers): nothing forked.
        assert now == r.json()["metadata_location"]
        assert (11, None) in rows(glue_catalog(moto), "shop", "events")

    # Drop removes the Glue table.
    assert requests.delete(f"{server.url}/tables/shop.items", timeout=30).status_code in (200, 204)
    assert [t["Name"] for t in glue.get_tables(DatabaseName="shop")["TableList"]] == ["events"]


def test_missing_credentials_refuse_to_start_naming_the_flag(make_server, moto, tmp_path):
    from test_catalog_postgres import start_failing

    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    err = start_failing(["--catalog", glue_url(moto)], tmp_path, env=env)
    lines = [line for line in err.splitlines() if "--catalog" in line]
    assert lines and "AWS_ACCESS_KEY_ID" in lines[0], err


def test_glue_catalog_with_an_s3_warehouse(glue_host, moto):
    if not s3_warehouse_landed():
        pytest.skip("the S3 warehouse has not landed yet")
    bucket = moto.bucket("lake")
    server = glue_host(["--warehouse", f"s3://{bucket}/wh", *moto.host_args()])
    server.create_table("s3ns.items", SCHEMA, primary_key=["id"])
    server.ingest("s3ns.items", [{"id": i, "name": f"i{i}"} for i in range(3)])
    server.ingest("s3ns.items", [{"id": 0}], operation="delete")
    server.commit("s3ns.items")
    assert server.table("s3ns.items")["metadata_location"].startswith(f"s3://{bucket}/wh/")
    assert rows(glue_catalog(moto), "s3ns", "items") == expect((1, "i1"), (2, "i2"))


def test_an_unreachable_glue_endpoint_refuses_to_start_naming_the_flag(moto, tmp_path):
    from conftest import free_port
    from test_catalog_postgres import start_failing

    url = f"glue://{REGION}?endpoint=http://127.0.0.1:{free_port()}"
    err = start_failing(["--catalog", url], tmp_path, env=moto.env())
    lines = [line for line in err.splitlines() if "--catalog" in line]
    assert lines and "refused" in lines[0].lower(), err
