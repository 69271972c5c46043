#!/usr/bin/env bash
# run.sh of the GPU kit (scripts/gpu-kit.sh copies this file into the kit as run.sh).
#
#   run.sh [--quick] OUT [PHASE...]      PHASE: tests bench peers table (default: all four)
#
# On a Linux x86-64 machine with an NVIDIA driver but no Rust and no Vulkan loader: unpacks
# the loader's .deb files (into /tmp/ml-softmax-loader, on LD_LIBRARY_PATH, where the system
# has no libvulkan.so.1), points the loader at the NVIDIA ICD where it is, then runs the GPU
# tests (WGPU_BACKEND=vulkan), `ml-softmax bench` in f32, bf16 and f16 at the default matrix
# plus 16x262144, 16384x32000 and 4096x128256, the host path (`bench --host`: transfer rates
# and the host API at 4096x32000), benches/cuda_peers.py (PyTorch eager, torch.compile,
# Liger-Kernel, memcpy) and benches/compare.py, writing every result and log into OUT and
# ending with the joined table (OUT/table.md). A failing phase is reported and the others
# still run; the exit status is that of the first failure.
#
# --quick: two small shapes, 3 reps, a short warm-up, one GPU test, peers in --dry-run (no
# torch needed): proves the kit's layout and this script on a software adapter (lavapipe).
# Phase time limits (seconds): KIT_TESTS_S (200), KIT_BENCH_S (300), KIT_PEERS_S (420).
# KIT_FORCE_LOADER=1 uses the carried loader even where the system has one (to test it).
set -uo pipefail
kit=$(cd "$(dirname "$0")" && pwd)
quick=0
if [ "${1:-}" = --quick ]; then
    quick=1
    shift
fi
out=${1:?usage: run.sh [--quick] OUT [tests bench peers table]}
shift
phases=${*:-tests bench peers table}
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec > >(tee -a "$out/run.log") 2>&1
status=0
fail() {
    echo "!!! $1"
    [ "$status" -ne 0 ] || status=1
}
echo "=== ml-softmax GPU kit, commit $(cat "$kit/commit"), $(date -u +%FT%TZ), quick=$quick, phases: $phases"
uname -a

# --- the Vulkan loader ---
if [ "${KIT_FORCE_LOADER:-0}" = 1 ] || ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    loader=/tmp/ml-softmax-loader
    n=0
    for deb in "$kit"/debs/*.deb; do
        [ -e "$deb" ] || continue
        dpkg-deb -x "$deb" "$loader" 2>/dev/null || (mkdir -p "$loader/x" && cd "$loader/x" &&
            ar x "$deb" && tar -xf data.tar.* -C "$loader" && rm -rf "$loader/x") ||
            fail "cannot unpack $deb"
        n=$((n + 1))
    done
    export LD_LIBRARY_PATH="$loader/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "no libvulkan.so.1 on the system: $n .deb files unpacked into $loader (LD_LIBRARY_PATH)"
else
    echo "the system has a Vulkan loader: $(ldconfig -p | grep 'libvulkan\.so\.1' | head -1)"
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -e "$icd" ]; then
    export VK_DRIVER_FILES=$icd
    echo "VK_DRIVER_FILES=$icd"
fi
egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
if [ -e "$egl" ]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES=$egl
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
export WGPU_BACKEND=vulkan
bin=$kit/bin/ml-softmax
# tests/cli.rs runs the binary from the path baked in when it was built: put it there.
baked=$(cat "$kit/baked-bin-path")
if [ ! -x "$baked" ]; then
    mkdir -p "$(dirname "$baked")" 2>/dev/null && ln -sf "$bin" "$baked" ||
        echo "cannot create $baked: tests/cli.rs will fail"
fi
command -v nvidia-smi >/dev/null && nvidia-smi >"$out/nvidia-smi.txt" 2>&1
"$bin" adapters 2>&1 | tee "$out/adapters.txt" || fail "ml-softmax adapters"

if [ "$quick" = 1 ]; then
    shapes=8x1000,64x4096
    bench_args=(--reps 3 --warmup-ms 50 --strategies auto,wg1)
    test_filter=(the_worked_example_on_every_adapter)
    peers_args=(--dry-run --reps 3 --warmup-ms 50)
    host_args=(--shapes 256x4096 --reps 3 --chunk-mib 1)
else
    shapes=16384x128,8192x1000,4096x4096,1024x32000,256x131072,64x262144,16x262144,8x1000,16384x32000,4096x128256
    bench_args=(--reps 100 --warmup-ms 500)
    test_filter=()
    peers_args=(--reps 50 --warmup-ms 300)
    host_args=(--shapes 4096x32000 --reps 5 --chunk-mib 64)
fi

# A background log of the GPU's clocks during the bench and the peers, where nvidia-smi is.
clocks() {
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,utilization.gpu \
            --format=csv -lms 500 >>"$out/clocks-$1.csv" 2>&1 &
        echo $!
    fi
}

for phase in $phases; do
    start=$SECONDS
    case $phase in
    tests)
        echo "=== GPU tests (WGPU_BACKEND=vulkan)"
        for t in gpu properties cli autotune read_once dispatches; do
            timeout "${KIT_TESTS_S:-200}" "$kit/tests/$t" --test-threads 4 "${test_filter[@]}" \
                >"$out/test-$t.log" 2>&1 || fail "tests/$t.rs failed (rc $?): see test-$t.log"
            grep -E '^test result|GPU tests (run on|skip)' "$out/test-$t.log" | sort -u
            [ "$quick" = 1 ] && break
        done
        ;;
    bench)
        echo "=== ml-softmax bench, $shapes"
        pid=$(clocks bench)
        for p in f32 bf16 f16; do
            timeout "${KIT_BENCH_S:-300}" "$bin" bench --backend vulkan --shapes "$shapes" \
                --precision "$p" "${bench_args[@]}" --json "$out/bench-$p.json" \
                >"$out/bench-$p.txt" 2>&1 || fail "bench $p failed (rc $?): see bench-$p.txt"
            cat "$out/bench-$p.txt"
        done
        # Host wall time per call (record + submit + wait) at the small shapes.
        timeout 60 "$bin" bench --backend vulkan --shapes 8x1000,16384x128,8192x1000 --wall \
            --strategies auto --reps 50 --json "$out/bench-wall-f32.json" \
            >"$out/bench-wall-f32.txt" 2>&1 || fail "bench --wall failed: see bench-wall-f32.txt"
        # The host path (issue 14 item 8): transfer rates and the host API's GB/s, default
        # chunks and 64 MiB chunks (pipelined).
        timeout 180 "$bin" bench --backend vulkan --host "${host_args[@]}" \
            --json "$out/bench-host.json" >"$out/bench-host.txt" 2>&1 ||
            fail "bench --host failed: see bench-host.txt"
        cat "$out/bench-host.txt"
        [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null
        ;;
    peers)
        echo "=== peers: benches/cuda_peers.py"
        if [ "$quick" != 1 ] && ! python3 -c 'import liger_kernel' 2>/dev/null; then
            for whl in "$kit"/wheels/*.whl; do
                [ -e "$whl" ] || continue
                python3 -m pip install --quiet --no-index --no-deps --target /tmp/site "$whl" &&
                    echo "installed $(basename "$whl") into /tmp/site"
            done
            export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
        fi
        # (--bench: with --dry-run, the join is checked against this run's bench JSON)
        join=()
        for p in f32 bf16 f16; do
            [ -e "$out/bench-$p.json" ] && join+=("$out/bench-$p.json")
        done
        [ "${#join[@]}" -gt 0 ] && join=(--bench "${join[@]}")
        pid=$(clocks peers)
        timeout "${KIT_PEERS_S:-420}" python3 "$kit/peers/cuda_peers.py" --shapes "$shapes" \
            "${peers_args[@]}" "${join[@]}" --json "$out/peers.json" >"$out/peers.log" 2>&1 ||
            fail "cuda_peers.py failed (rc $?): see peers.log"
        tail -n 30 "$out/peers.log"
        [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null
        ;;
    table)
        echo "=== the joined table"
        bench_json=()
        for p in f32 bf16 f16; do
            [ -e "$out/bench-$p.json" ] && bench_json+=("$out/bench-$p.json")
        done
        if [ "${#bench_json[@]}" -eq 0 ]; then
            fail "no bench JSON in $out: run the bench phase"
        else
            peers=()
            [ -e "$out/peers.json" ] && peers=(--peers "$out/peers.json")
            python3 "$kit/peers/compare.py" --bench "${bench_json[@]}" "${peers[@]}" \
                --out "$out/table.md" --json "$out/table.json" || fail "compare.py failed"
        fi
        ;;
    *) fail "unknown phase $phase" ;;
    esac
    echo "=== $phase: $((SECONDS - start)) s"
done
echo "=== done, status $status; results in $out"
exit "$status"
