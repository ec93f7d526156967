"""The OpenAPI document (`GET /openapi.json`) and schemathesis against the real binary: zero 5xx,
no crash, every response as documented (status codes, bodies, headers).

Two schemathesis runs share one server:
1. the served document as it is, positive and negative cases, every check but
   `positive_data_acceptance` (the document cannot say which type names parse or which rows fit
   a table it does not know);
2. the same document with the table routes pinned to a keyed table that has a column of every
   type, and the ingest row schema narrowed to that table's columns (values still arbitrary
   JSON of the right kinds), positive cases only, so examples reach real decoding, the engine
   and commits.

MOONLINK_SCHEMATHESIS_EXAMPLES (default 150) and MOONLINK_SCHEMATHESIS_SEED (default 1) tune
the runs. This module is also the schemathesis hooks module of the runs (SCHEMATHESIS_HOOKS):
it registers the NDJSON body generator.
"""
import copy
import json
import os
import subprocess
import sys

import pytest
import requests

TOKEN = "fuzz-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")
EXAMPLES = int(os.environ.get("MOONLINK_SCHEMATHESIS_EXAMPLES", "150"))
SEED = int(os.environ.get("MOONLINK_SCHEMATHESIS_SEED", "1"))

ROUTES = {
    "/health": {"get"},
    "/openapi.json": {"get"},
    "/tables": {"get"},
    "/tables/{name}": {"get", "post", "delete"},
    "/tables/{name}/schema": {"post"},
    "/tables/{name}/partitioning": {"put"},
    "/schema/{database}/{table}": {"get"},
    "/tables/{name}/commit": {"post"},
    "/tables/{name}/flush": {"post"},
    "/tables/{name}/optimize": {"post"},
    "/tables/{name}/truncate": {"post"},
    "/ingest/{name}": {"post"},
    "/query": {"post"},
    "/plugins": {"get"},
    "/ready": {"get"},
    "/status": {"get"},
    "/metrics": {"get"},
    # The served Iceberg REST catalog: reads, and every write route of the spec refused (403).
    "/iceberg/v1/config": {"get"},
    "/iceberg/v1/namespaces": {"get", "post"},
    "/iceberg/v1/namespaces/{namespace}": {"get", "head", "delete"},
    "/iceberg/v1/namespaces/{namespace}/properties": {"post"},
    "/iceberg/v1/namespaces/{namespace}/tables": {"get", "post"},
    "/iceberg/v1/namespaces/{namespace}/tables/{table}": {"get", "head", "post", "delete"},
    "/iceberg/v1/namespaces/{namespace}/register": {"post"},
    "/iceberg/v1/namespaces/{namespace}/tables/{table}/unregister": {"post"},
    "/iceberg/v1/tables/rename": {"post"},
    "/iceberg/v1/transactions/commit": {"post"},
    "/iceberg/v1/namespaces/{namespace}/views": {"post"},
    "/iceberg/v1/namespaces/{namespace}/views/{view}": {"post", "delete"},
    "/iceberg/v1/views/rename": {"post"},
    "/iceberg/v1/namespaces/{namespace}/register-view": {"post"},
}

FUZZ_TABLE = "fuzz.t"
FUZZ_COLUMNS = [
    ("id", "int64", False, {"type": "integer"}),
    ("name", "string", True, {"type": ["string", "null"]}),
    ("i16", "int16", True, {"type": ["integer", "null"]}),
    ("i32", "int32", True, {"type": ["integer", "null"]}),
    ("f32", "float32", True, {"type": ["number", "null"]}),
    ("f64", "float64", True, {"type": ["number", "null"]}),
    ("flag", "bool", True, {"type": ["boolean", "null"]}),
    ("amount", "decimal(10,2)", True, {"anyOf": [
        {"type": "string", "pattern": r"^[-+]?[0-9]{0,12}(\.[0-9]{0,4})?([eE][-+]?[0-9]{1,3})?$"},
        {"type": "number"}, {"type": "string"}, {"type": "null"}]}),
    ("day", "date32", True, {"anyOf": [{"type": "string", "format": "date"}, {"type": "string"}, {"type": "null"}]}),
    ("ts", "timestamp", True, {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string"}]}),
    ("tstz", "timestamptz", True, {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string"}]}),
    ("t", "time", True, {"anyOf": [
        {"type": "string", "pattern": r"^[0-9]{1,2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?$"},
        {"type": "string"}, {"type": "integer"}]}),
    ("bin", "binary", True, {"type": ["string", "null"]}),
    ("u", "uuid", True, {"anyOf": [{"type": "string", "format": "uuid"}, {"type": "string"}]}),
    ("tags", "list<string>", True, {"type": ["array", "null"], "items": {"type": ["string", "null"]}}),
    ("nums", "list<int32>", True, {"type": ["array", "null"], "items": {}}),
]


# --- schemathesis hooks (loaded by the CLI through SCHEMATHESIS_HOOKS=test_openapi) ---------
def _register_ndjson():
    import schemathesis
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    )
    names = st.sampled_from([c[0] for c in FUZZ_COLUMNS]) | st.text(max_size=8)
    row = st.dictionaries(names, json_values, max_size=6).map(lambda d: json.dumps(d))
    line = row | st.text(max_size=30)
    body = st.lists(line, max_size=5).map(lambda lines: "\n".join(lines).encode()) | st.binary(max_size=64)
    schemathesis.openapi.media_type("application/x-ndjson", body)


if os.environ.get("MOONLINK_SCHEMATHESIS_HOOKS") == "1":
    _register_ndjson()


# --- tests ---------------------------------------------------------------------------------
def test_the_document_covers_every_route_and_needs_no_token(make_server):
    server = make_server(["--auth-token", TOKEN])
    r = requests.get(server.url + "/openapi.json", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    documented = {path: set(ops) for path, ops in doc["paths"].items()}
    assert documented == ROUTES
    error = doc["components"]["schemas"]["ErrorBody"]
    assert set(error["properties"]) == {"error", "message", "row", "column"}
    ingest = doc["paths"]["/ingest/{name}"]["post"]
    assert {p["name"] for p in ingest["parameters"]} == {"name", "operation", "request_mode"}
    assert set(ingest["requestBody"]["content"]) == {"application/json", "application/x-ndjson",
                                                     "application/vnd.apache.arrow.stream"}
    assert {"200", "400", "401", "404", "409", "413", "422", "503"} <= set(ingest["responses"])
    # Every documented route exists: none answers the router's "no such route".
    for path, methods in ROUTES.items():
        for method in methods:
            url = server.url + path.replace("{name}", "nope.nope")
            for param in ("{namespace}", "{table}", "{view}", "{database}"):
                url = url.replace(param, "nope")
            r = requests.request(method, url, headers=AUTH, timeout=30)
            assert r.status_code != 405, (method, path)
            if r.status_code == 404 and method != "head":  # a HEAD reply has no body
                assert r.json()["error"] != "not_found", (method, path, r.text)


def pinned_document(doc):
    """The document with table routes pinned to FUZZ_TABLE and ingest rows shaped like it."""
    doc = copy.deepcopy(doc)
    for path in ["/ingest/{name}", "/tables/{name}/commit", "/tables/{name}/flush",
                 "/tables/{name}/optimize", "/tables/{name}/truncate"]:
        for op in doc["paths"][path].values():
            for p in op["parameters"]:
                if p["name"] == "name":
                    p["schema"] = {"type": "string", "enum": [FUZZ_TABLE]}
    doc["paths"]["/tables/{name}"]["get"]["parameters"][0]["schema"] = {"type": "string", "enum": [FUZZ_TABLE]}
    row = {
        "type": "object",
        "properties": {name: schema for name, _, _, schema in FUZZ_COLUMNS},
        "required": ["id"],
        "additionalProperties": False,
    }
    schemas = doc["components"]["schemas"]
    schemas["FuzzRow"] = row
    envelope = schemas["IngestEnvelope"]
    envelope["properties"]["data"] = {"oneOf": [
        {"$ref": "#/components/schemas/FuzzRow"},
        {"type": "array", "items": {"$ref": "#/components/schemas/FuzzRow"}, "maxItems": 5},
    ]}
    return doc


def run_schemathesis(server, document_path, tmp_path, extra):
    env = dict(os.environ, MOONLINK_SCHEMATHESIS_HOOKS="1", SCHEMATHESIS_HOOKS="test_openapi",
               PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [SCHEMATHESIS, "run", str(document_path), "--url", server.url,
            "-H", f"Authorization: Bearer {TOKEN}",
            "--max-examples", str(EXAMPLES), "--seed", str(SEED),
            # One worker: CPython 3.11's AST constructor is not thread-safe (gh-106905), and
            # schemathesis compiles code while generating, so two workers can crash the run
            # itself with "SystemError: AST constructor recursion depth mismatch".
            "--workers", "1", "--request-timeout", "60",
            "--generation-database", "none", "--no-color",
            "--suppress-health-check", "all",
            "--continue-on-failure", *extra]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    print(output[-20000:])
    return result.returncode, output


def test_schemathesis_finds_no_5xx_and_every_reply_is_documented(make_server, tmp_path):
    server = make_server(["--auth-token", TOKEN, "--max-body-bytes", str(1024 * 1024)])
    r = requests.post(f"{server.url}/tables/{FUZZ_TABLE}", headers=AUTH, timeout=30, json={
        "schema": [{"name": n, "data_type": t, "nullable": null} for n, t, null, _ in FUZZ_COLUMNS],
        "primary_key": ["id"],
    })
    assert r.status_code == 201, r.text
    doc = requests.get(server.url + "/openapi.json", timeout=10).json()
    generic = tmp_path / "openapi.json"
    generic.write_text(json.dumps(doc))
    pinned = tmp_path / "openapi-pinned.json"
    pinned.write_text(json.dumps(pinned_document(doc)))

    failures = []
    rc, out = run_schemathesis(server, generic, tmp_path, [
        "--mode", "all", "--checks", "all",
        "--exclude-checks", "positive_data_acceptance,object_level_authorization",
        "--phases", "examples,coverage,fuzzing,stateful"])
    if rc != 0:
        failures.append(("served document", out[-8000:]))
    assert server.proc.poll() is None, "the server died during the generic run: " + server.read_log()
    if requests.get(f"{server.url}/tables/{FUZZ_TABLE}", headers=AUTH, timeout=10).status_code == 404:
        # The generic run may have dropped it (DELETE with a generated name); recreate.
        r = requests.post(f"{server.url}/tables/{FUZZ_TABLE}", headers=AUTH, timeout=30, json={
            "schema": [{"name": n, "data_type": t, "nullable": null} for n, t, null, _ in FUZZ_COLUMNS],
            "primary_key": ["id"]})
        assert r.status_code == 201, r.text
    rc, out = run_schemathesis(server, pinned, tmp_path, [
        "--mode", "positive",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                    "response_headers_conformance,response_schema_conformance",
        "--phases", "examples,fuzzing", "--include-path-regex", "^/(ingest|tables/)",
        "--exclude-method", "DELETE"])
    if rc != 0:
        failures.append(("pinned table", out[-8000:]))

    assert server.proc.poll() is None, "the server died: " + server.read_log()
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    log = server.read_log()
    assert "panicked" not in log, log
    assert not failures, "\n\n".join(f"== {what} ==\n{out}" for what, out in failures)
    # The pinned run reached the engine: rows were written.
    assert requests.get(f"{server.url}/tables/{FUZZ_TABLE}", headers=AUTH, timeout=10).json()["last_lsn"] > 0
