#!/usr/bin/env bash
# Builds the browser page into web/dist/: the web crate for wasm32-unknown-unknown (release),
# then wasm-bindgen's JavaScript glue, index.html and the reductions guide (docs/reductions.md,
# whose sections the page shows). Needs the wasm32 target
# (`rustup target add wasm32-unknown-unknown`) and wasm-bindgen-cli at exactly the version of
# the wasm-bindgen crate in Cargo.lock (`cargo install wasm-bindgen-cli --version V`).
# Serve the folder with any static server, e.g. `python3 -m http.server -d web/dist 8000`.
set -euo pipefail
cd "$(dirname "$0")/.."

want=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
    echo "web/build.sh: needs wasm-bindgen-cli $want (Cargo.lock's wasm-bindgen), found '${have:-none}':" >&2
    echo "    cargo install wasm-bindgen-cli --version $want" >&2
    exit 1
fi

target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release --target wasm32-unknown-unknown -p ml-softmax-web
rm -rf web/dist
wasm-bindgen --target web --no-typescript --out-dir web/dist \
    "$target_dir/wasm32-unknown-unknown/release/ml_softmax_web.wasm"
cp web/index.html web/dist/
# The reductions guide, whose sections the page shows next to its steps' results.
cp docs/reductions.md web/dist/
echo "web/build.sh: built web/dist/ ($(du -sh web/dist | cut -f1))"
