"""postgres_cdc with WIT 0.3.0: a column added with a default gives the rows that existed
before it that default in every reader (Iceberg v3 `initial-default`), and a table's
`partition_by` setting partitions the Iceberg table the host creates."""

from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

from readers import duckdb_rows, load_json, pyiceberg_table
from test_postgres_cdc import PLUGIN, assert_mirrors, cdc_host, iceberg_rows  # noqa: F401 (fixture)


def test_a_column_added_with_a_default_reads_it_in_old_rows(postgres, cdc_host):
    pg = postgres
    pg.execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text);"
        "INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 20) g;",
        db="app",
    )
    host = cdc_host(pg, ["public.items"])
    assert_mirrors(host, pg, "public.items", "items", ["id", "name"], expect_rows=20)
    # Non-volatile defaults: Postgres keeps them as attmissingval and rewrites nothing.
    pg.execute("ALTER TABLE items ADD COLUMN qty int DEFAULT 7, ADD COLUMN label text DEFAULT 'none',"
               " ADD COLUMN day date DEFAULT '2024-01-31'", db="app")
    pg.execute("INSERT INTO items VALUES (21, 'new', 3, 'set', '2025-05-05');"
               "UPDATE items SET qty = 8 WHERE id = 1", db="app")
    columns = ["id", "name", "qty", "label", "day"]
    assert_mirrors(host, pg, "public.items", "items", columns, expect_rows=21)
    # The defaults are in the Iceberg schema as initial-default and write-default.
    metadata = load_json(host.table("public.items")["metadata_location"])
    schema = next(s for s in metadata["schemas"] if s["schema-id"] == metadata["current-schema-id"])
    qty = next(f for f in schema["fields"] if f["name"] == "qty")
    assert qty.get("initial-default") == 7 and qty.get("write-default") == 7, qty

    # A volatile default rewrites the table in Postgres; the rewrite is not replicated: old
    # rows read null in Iceberg (and the plugin says so), the defaults above stay.
    pg.execute("ALTER TABLE items ADD COLUMN r float8 DEFAULT random()", db="app")
    pg.execute("INSERT INTO items VALUES (22, 'volatile', 1, 'x', '2025-01-01', 0.5)", db="app")
    assert_mirrors(host, pg, "public.items", "items", columns, expect_rows=22)
    duck, py = iceberg_rows(host, "public.items", ["id", "r"])
    assert duck == py == sorted([(str(i), None) for i in range(1, 22)] + [("22", "0.5")])
    assert "volatile" in host.read_log()

    host.restart()
    pg.execute("INSERT INTO items (id, name) VALUES (23, 'after restart')", db="app")
    assert_mirrors(host, pg, "public.items", "items", columns, expect_rows=23)


def test_partition_by_setting_partitions_the_created_table(postgres, make_server, tmp_path, monkeypatch):
    pg = postgres
    pg.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, created_at timestamptz NOT NULL, amount int);"
        "INSERT INTO orders SELECT g, timestamptz '2024-03-01 00:00+00' + (g % 3) * interval '1 day', g"
        " FROM generate_series(1, 300) g;",
        db="app",
    )
    monkeypatch.setenv("MOONLINK_TEST_PGPASSWORD", pg.password)
    config = tmp_path / "pg.toml"
    config.write_text(f'''name = "pg"
[settings]
host = "127.0.0.1"
port = {pg.port}
user = "postgres"
password_env = "MOONLINK_TEST_PGPASSWORD"
database = "app"
slot = "moonlink"
[settings.tables."public.orders"]
partition_by = ["day(created_at)"]
[poll]
max_rows = 5000
timeout_ms = 100
''')
    host = make_server(["--plugin", PLUGIN, "--config", str(config)])
    assert_mirrors(host, pg, "public.orders", "orders", ["id", "amount"], expect_rows=300)
    info = host.table("public.orders")
    assert info["partition_by"] == ["day(created_at)"], info
    # DuckDB reads every row; PyIceberg plans only the files of the day asked for.
    assert len(duckdb_rows(info["metadata_location"], "id")) == 300
    table = pyiceberg_table(host.data_dir, "public", "orders")
    every = list(table.scan().plan_files())
    one_day = list(table.scan(row_filter=And(GreaterThanOrEqual("created_at", "2024-03-02T00:00:00+00:00"),
                                             LessThan("created_at", "2024-03-03T00:00:00+00:00"))).plan_files())
    assert len(every) >= 3 and 0 < len(one_day) < len(every), (len(every), len(one_day))
    rows = table.scan(row_filter=And(GreaterThanOrEqual("created_at", "2024-03-02T00:00:00+00:00"),
                                     LessThan("created_at", "2024-03-03T00:00:00+00:00"))).to_arrow()
    assert rows.num_rows == 100
