#!/usr/bin/env bash
# Builds the GPU kit (issue 14): the release binary, the GPU test binaries, the peers scripts,
# the Vulkan loader's .deb files and the Liger-Kernel wheel, with a run.sh, in one folder
# (default: target/gpu-kit, whatever CARGO_TARGET_DIR is) that runs on a Linux x86-64
# machine with an NVIDIA driver but no Rust toolchain and no Vulkan loader:
#
#   scripts/gpu-kit.sh                  # build the kit (needs cargo, apt-get, pip, network)
#   <kit>/run.sh "$OUT"                 # there: tests, bench, peers, the joined table -> $OUT
#   <kit>/run.sh --quick "$OUT"         # a few small shapes, peers in dry run (here, lavapipe)
#
# KIT_NO_DOWNLOADS=1 leaves out the .deb files and the wheel (a kit for a machine that has a
# Vulkan loader). The kit must stay under 64 MiB (the device tool's carry limit): checked.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$root/target}
kit=${1:-$root/target/gpu-kit}
limit_mib=64

echo "=== building the release binary and the test binaries (target: $target)"
cargo build --release --bin ml-softmax
# The test executables' paths, from cargo's JSON messages. tests/cli.rs has the binary's
# path ($target/release/ml-softmax) baked in at build time: run.sh recreates it there.
cargo test --release --no-run --test gpu --test properties --test cli --test autotune --test read_once \
    --test dispatches \
    --message-format=json >"$target/gpu-kit-build.json"
mapfile -t tests < <(python3 - "$target/gpu-kit-build.json" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and \
            m["target"]["kind"] == ["test"]:
        print(m["target"]["name"] + " " + m["executable"])
EOF
)
[ "${#tests[@]}" -eq 6 ] || { echo "expected 6 test binaries, got: ${tests[*]}" >&2; exit 1; }

rm -rf "$kit"
mkdir -p "$kit/bin" "$kit/tests" "$kit/peers" "$kit/debs" "$kit/wheels"
cp "$target/release/ml-softmax" "$kit/bin/"
for t in "${tests[@]}"; do
    name=${t%% *}
    cp "${t#* }" "$kit/tests/$name"
done
strip "$kit/bin/ml-softmax" "$kit/tests/"*
echo "$target/release/ml-softmax" >"$kit/baked-bin-path"
cp benches/cuda_peers.py benches/compare.py "$kit/peers/"
cp scripts/gpu-kit-run.sh "$kit/run.sh"
chmod +x "$kit/run.sh"
git -C "$root" describe --always --dirty >"$kit/commit" 2>/dev/null || echo unknown >"$kit/commit"

if [ "${KIT_NO_DOWNLOADS:-0}" != 1 ]; then
    echo "=== the Vulkan loader's .deb files (amd64) and the Liger-Kernel wheel"
    # The loader and GL dispatch libraries (../shared/notes/h200.md: what worked on the H200).
    (cd "$kit/debs" && apt-get download libvulkan1:amd64 libegl1:amd64 libglvnd0:amd64 \
        libopengl0:amd64 libgl1:amd64 libglx0:amd64 libgles2:amd64) || {
        echo "apt-get download failed (run apt-get update first?)" >&2
        exit 1
    }
    pip download --quiet --no-deps liger-kernel -d "$kit/wheels"
fi

size_kib=$(du -sk "$kit" | cut -f1)
echo "=== kit: $kit, $((size_kib / 1024)) MiB ($size_kib KiB), commit $(cat "$kit/commit")"
ls -la "$kit" "$kit/bin" "$kit/tests" "$kit/debs" "$kit/wheels"
if [ "$size_kib" -ge $((limit_mib * 1024)) ]; then
    echo "the kit is over $limit_mib MiB" >&2
    exit 1
fi
