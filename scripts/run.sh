#!/usr/bin/env bash
# Builds host and plugins, then starts moonlink-host on the embedded default:
# SQLite catalog + local warehouse under ./data, HTTP on 127.0.0.1:3030. Extra args pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_wasm_target
build_plugins
# A server's main job runs the release build (the debug build is for tests).
section "build moonlink-host (release)"
cargo build -p moonlink-host --release
# Defaults through the environment, so flags given to this script override them.
export MOONLINK_DATA_DIR="${MOONLINK_DATA_DIR:-./data}"
export MOONLINK_LISTEN="${MOONLINK_LISTEN:-127.0.0.1:3030}"
export MOONLINK_PLUGIN_DIR="${MOONLINK_PLUGIN_DIR:-$PLUGIN_DIR}"
exec "$CARGO_TARGET_DIR/release/moonlink-host" "$@"
