# Shared setup for scripts/run.sh and scripts/test.sh: toolchain target and build directory.
# Sourced, not executed.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/moonlink-target}"
PLUGIN_DIR="$CARGO_TARGET_DIR/wasm32-wasip2/release"

section() { printf '\n==> %s\n' "$*"; }

ensure_wasm_target() {
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    section "rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2
  fi
}

build_plugins() {
  section "build plugins (wasm32-wasip2)"
  cargo build -p rest_ingest -p faulty -p datagen -p filter -p mask -p faulty_source -p postgres_cdc -p kafka -p otel \
    --target wasm32-wasip2 --release
}
