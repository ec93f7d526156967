#!/usr/bin/env bash
# Builds host and plugins, then starts moonlink-host on the embedded default:
# SQLite catalog + local warehouse under ./data, HTTP on 127.0.0.1:3030. Extra args pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_wasm_target
build_plugins
section "build moonlink-host"
cargo build -p moonlink-host
exec "$CARGO_TARGET_DIR/debug/moonlink-host" --data-dir ./data --listen 127.0.0.1:3030 \
  --plugin-dir "$PLUGIN_DIR" "$@"
