#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: installs what it needs (the wasm
# target, a Python venv with DuckDB + iceberg/avro/httpfs extensions, PyIceberg, moto and
# PySpark, Debian's Java runtime for Spark), then runs
# fmt, clippy, the Rust tests, and the end-to-end tests against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_wasm_target

VENV="${MOONLINK_VENV:-$HOME/.cache/moonlink-venv}"
REQS=tests/requirements.txt
STAMP="$VENV/.requirements-$(sha256sum "$REQS" | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  section "python venv for the Iceberg readers ($VENV)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet -r "$REQS"
  touch "$STAMP"
fi

# Debian packages the end-to-end tests run: Postgres 15 (CDC and the Postgres catalog),
# chromium (the status page) and tmux (the terminal progress bars). Java is spark_env.sh's.
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v chromium >/dev/null || need+=(chromium)
command -v tmux >/dev/null || need+=(tmux)
if [ "${#need[@]}" -gt 0 ]; then
  section "apt: ${need[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

section "Java + Spark with Iceberg for the external-writer test (scripts/spark_env.sh)"
bash scripts/spark_env.sh "$VENV/bin/python"

section "cargo fmt --check"
cargo fmt --all -- --check

build_plugins

section "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p rest_ingest --target wasm32-wasip2 --release -- -D warnings

section "cargo test (native crates, plugin logic natively)"
cargo test --workspace
cargo test -p moonlink-sdk --features source,transform,rest-ingest --doc

section "build moonlink-host"
cargo build -p moonlink-host

section "end-to-end tests (real binary, DuckDB + PyIceberg)"
MOONLINK_BIN="$CARGO_TARGET_DIR/debug/moonlink-host" MOONLINK_PLUGIN_DIR="$PLUGIN_DIR" \
  "$VENV/bin/python" -m pytest tests/e2e -v
