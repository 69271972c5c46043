#!/bin/bash
# issue 14 item 3 bench on lavapipe: split256 (old order) vs splitcache256 in the same run.
# Run from the repository root after `cargo build --release`; OUT: where the JSON goes.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/xdg-bench}; mkdir -p "$XDG_RUNTIME_DIR"
B=${ML_SOFTMAX:-target/release/ml-softmax}
for p in f32 bf16 f16; do
  echo "=== $p $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  $B bench --backend vulkan --shapes 64x262144,256x131072,16x262144 --strategies split256,splitcache256 --reps 5 --precision $p --json ${OUT:-.}/$p.json
  echo "=== $p 4MiB budget $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  ML_SOFTMAX_SPLIT_CACHE_BYTES=4194304 $B bench --backend vulkan --shapes 64x262144,256x131072,16x262144 --strategies split256,splitcache256 --reps 5 --precision $p --json ${OUT:-.}/${p}_4m.json
done
echo "=== done $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
