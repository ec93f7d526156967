"""Independent Iceberg readers: DuckDB's iceberg extension and PyIceberg.

Both read exactly what a user would: DuckDB the metadata file from `GET /tables`, PyIceberg the
SQLite catalog in the data directory. Values are normalised to plain Python values so the two
readers can be compared with each other and with what the test sent.
"""
import datetime
import glob
import os
import sysconfig
import uuid
from decimal import Decimal

import duckdb


def _extension_path(name):
    site = sysconfig.get_paths()["purelib"]
    found = glob.glob(os.path.join(site, f"duckdb_extension_{name}", "**", f"{name}.duckdb_extension"), recursive=True)
    if not found:
        raise RuntimeError(f"duckdb-extension-{name} is not installed in {site}")
    return found[0]


def _duckdb(s3=None):
    """A DuckDB connection with the avro and iceberg extensions; `s3` (a `s3server.MotoServer`)
    also loads httpfs and points it at that S3 server."""
    # Extensions come from the pip wheels; nothing is downloaded.
    con = duckdb.connect(config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
    for name in ("avro", "iceberg") + (("httpfs",) if s3 else ()):
        con.execute(f"LOAD '{_extension_path(name)}'")
    if s3:
        s3.duckdb_setup(con)
    return con


def normalise(value):
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.timezone.utc)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, float) and value != value:
        return "NaN"
    return value


def _sorted(rows):
    return sorted((tuple(normalise(v) for v in row) for row in rows), key=lambda r: tuple((v is None, str(v)) for v in r))


def duckdb_rows(metadata_location, columns="*", s3=None):
    con = _duckdb(s3)
    try:
        return _sorted(con.execute(f"SELECT {columns} FROM iceberg_scan('{metadata_location}')").fetchall())
    finally:
        con.close()


def duckdb_count(metadata_location, s3=None):
    con = _duckdb(s3)
    try:
        return con.execute(f"SELECT count(*) FROM iceberg_scan('{metadata_location}')").fetchone()[0]
    finally:
        con.close()


def local_path(location):
    """A local location (`file:///abs`, Java's `file:/abs`, or `/abs`) as a path; other
    locations (`s3://...`) unchanged."""
    if location.startswith("file:"):
        return "/" + location[len("file:"):].lstrip("/")
    return location


def load_json(location, s3=None):
    """A metadata JSON file, local or (with `s3`) in the S3 server's bucket."""
    import json

    if location.startswith("s3://"):
        bucket, key = location[len("s3://"):].split("/", 1)
        return json.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    with open(local_path(location)) as f:
        return json.load(f)


def retained_files(metadata_location, s3=None):
    """Every data and delete file a live entry of any retained snapshot references."""
    metadata = load_json(metadata_location, s3)
    con = _duckdb(s3)
    try:
        files = set()
        for snapshot in metadata.get("snapshots", []):
            manifests = con.execute(f"SELECT manifest_path FROM read_avro('{snapshot['manifest-list']}')").fetchall()
            for (path,) in manifests:
                rows = con.execute(f"SELECT data_file.file_path FROM read_avro('{path}') WHERE status != 2").fetchall()
                files.update(local_path(r[0]) for r in rows)
        return files
    finally:
        con.close()


def live_manifest_entries(metadata_location, s3=None):
    """The live (status != DELETED) entries of the current snapshot, read from the Avro
    manifests with DuckDB's avro extension: file_path, content, file_format, record_count,
    referenced_data_file, content_offset, content_size_in_bytes."""
    metadata = load_json(metadata_location, s3)
    current = metadata.get("current-snapshot-id")
    snapshot = next(s for s in metadata.get("snapshots", []) if s["snapshot-id"] == current)
    con = _duckdb(s3)
    try:
        manifests = con.execute(f"SELECT manifest_path FROM read_avro('{snapshot['manifest-list']}')").fetchall()
        entries = []
        for (path,) in manifests:
            rows = con.execute(
                f"""SELECT data_file.file_path, data_file.content, data_file.file_format, data_file.record_count,
                           data_file.referenced_data_file, data_file.content_offset, data_file.content_size_in_bytes
                    FROM read_avro('{path}') WHERE status != 2""").fetchall()
            keys = ["file_path", "content", "file_format", "record_count", "referenced_data_file",
                    "content_offset", "content_size_in_bytes"]
            entries.extend(dict(zip(keys, r)) for r in rows)
        return entries
    finally:
        con.close()


def _catalog(data_dir, s3=None):
    from pyiceberg.catalog.sql import SqlCatalog

    data_dir = os.path.abspath(data_dir)
    props = s3.pyiceberg_props() if s3 else {}
    return SqlCatalog("moonlink", uri=f"sqlite:///{data_dir}/catalog.db", warehouse=f"file://{data_dir}/warehouse", **props)


def pyiceberg_table(data_dir, namespace, table, s3=None):
    return _catalog(data_dir, s3).load_table((namespace, table))


def pyiceberg_rows(data_dir, namespace, table, s3=None):
    arrow = pyiceberg_table(data_dir, namespace, table, s3).scan().to_arrow()
    names = arrow.column_names
    return _sorted(tuple(row[n] for n in names) for row in arrow.to_pylist())


def pyiceberg_data_files(data_dir, namespace, table):
    tbl = pyiceberg_table(data_dir, namespace, table)
    return [task.file.file_path for task in tbl.scan().plan_files()]


def expect(*rows):
    return _sorted(rows)


def utc(*args):
    return datetime.datetime(*args, tzinfo=datetime.timezone.utc)


__all__ = ["duckdb_rows", "duckdb_count", "pyiceberg_rows", "pyiceberg_data_files", "pyiceberg_table", "expect", "utc", "Decimal"]
