#!/usr/bin/env bash
# otter against its peers, same machine, same run: seconds per CFG step of otter (its default
# precision), stable-diffusion.cpp (its CPU defaults) and PyTorch (bench/pytorch/reference.py, f32
# and bf16), interleaved run by run, best of N, with the ratios.
#
#   bench/peers/run.sh SDCPP_SOURCE [RUNS] [SIZES]
#   bench/peers/run.sh ~/src/stable-diffusion.cpp 3 "256 512"
#
# SDCPP_SOURCE: a checkout of https://github.com/leejet/stable-diffusion.cpp with its ggml
# submodule (`git clone --recursive`, then `git checkout COMMIT && git submodule update`). This
# script downloads nothing: it builds that folder's sd-cli into build/peers/sdcpp (Release,
# GGML_NATIVE, no WebP/WebM) and prints the commit it built. Measured figures in the README name
# the commit.
#
# The model: otter-bench's random SD 1.5 weights (f16) written once as an original-layout single
# file (build/peers/sd15.safetensors), which otter and sd.cpp both load; PyTorch builds the same
# architecture from tools/demo_model/modules.py (speed does not depend on the weights' values).
# A step's time for the two CLIs is (T(12 steps) - T(2 steps)) / 10 over whole runs (Euler, CFG 7),
# so loading, weight preparation, text encoding and decoding cancel (ten steps apart, so that their
# run-to-run spread — seconds for a first step that prepares 1.7 GB of weights — is divided by ten);
# PyTorch's is its UNet pass at batch 2.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
src="${1:?usage: bench/peers/run.sh SDCPP_SOURCE [RUNS] [SIZES]}"
runs="${2:-3}"
sizes="${3:-256 512}"
threads="${THREADS:-$(lscpu -p=core | grep -v '^#' | sort -u | wc -l)}"
otter="$root/build/release/otter"
bench="$root/build/release/bench/otter-bench"
out="$root/build/peers"
mkdir -p "$out"
[[ -x "$otter" && -x "$bench" ]] || { echo "build otter first: cmake --workflow --preset release" >&2; exit 2; }
[[ -f "$src/CMakeLists.txt" && -f "$src/ggml/CMakeLists.txt" ]] ||
  { echo "$src is not a stable-diffusion.cpp checkout with its ggml submodule (git clone --recursive)" >&2; exit 2; }

commit="$(git -C "$src" rev-parse HEAD 2>/dev/null || echo "${SDCPP_COMMIT:-unknown (not a git checkout; set SDCPP_COMMIT)}")"
echo "building stable-diffusion.cpp $commit ..." >&2
cmake -S "$src" -B "$out/sdcpp" -DCMAKE_BUILD_TYPE=Release -DSD_WEBP=OFF -DSD_WEBM=OFF -DGGML_NATIVE=ON >"$out/sdcpp-configure.log" 2>&1 ||
  { tail -20 "$out/sdcpp-configure.log" >&2; exit 1; }
cmake --build "$out/sdcpp" --target sd-cli -j "$(nproc)" >"$out/sdcpp-build.log" 2>&1 || { tail -20 "$out/sdcpp-build.log" >&2; exit 1; }
sd="$(find "$out/sdcpp" -name sd-cli -type f -perm -u+x | head -1)"

model="$out/sd15.safetensors"
[[ -f "$model" ]] || "$bench" --write-model "$model" >&2

prompt="a photograph of an astronaut riding a horse"
seconds() {  # wall seconds of a command, its output discarded
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
otter_run() { seconds "$otter" generate -m "$model" -p "$prompt" --seed 1 --steps "$2" -W "$1" -H "$1" --sampler euler --cfg-scale 7 --threads "$threads" -q -o "$out/otter.png"; }
sd_run() { seconds "$sd" -m "$model" -p "$prompt" --seed 1 --steps "$2" -W "$1" -H "$1" --sampling-method euler --cfg-scale 7 -t "$threads" -o "$out/sdcpp.png"; }
per_step() { echo "($1 - $2) / 10" | bc -l; }
min() { if [[ -z "$1" ]] || (($(echo "$2 < $1" | bc -l))); then echo "$2"; else echo "$1"; fi; }

# Warm-up, untimed: the model file into the page cache for both CLIs (a cold first read would land
# in one of the two timed runs and not cancel).
for size in $sizes; do otter_run "$size" 1 >/dev/null; sd_run "$size" 1 >/dev/null; done

declare -A best
for ((r = 1; r <= runs; r++)); do
  for size in $sizes; do
    best[otter_$size]=$(min "${best[otter_$size]:-}" "$(per_step "$(otter_run "$size" 12)" "$(otter_run "$size" 2)")")
    best[sd_$size]=$(min "${best[sd_$size]:-}" "$(per_step "$(sd_run "$size" 12)" "$(sd_run "$size" 2)")")
    # shellcheck disable=SC2086
    /usr/bin/python3 "$root/bench/pytorch/reference.py" --sizes "$size" --precisions f32 bf16 --threads "$threads" \
      --runs 1 --json "$out/pytorch.json" >/dev/null 2>&1
    for p in f32 bf16; do
      s=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['$p']['$size']['cfg_step_batch2_seconds'])" "$out/pytorch.json")
      best[torch_${p}_$size]=$(min "${best[torch_${p}_$size]:-}" "$s")
    done
    echo "run $r, $size: otter ${best[otter_$size]}, sd.cpp ${best[sd_$size]}, PyTorch bf16 ${best[torch_bf16_$size]}" >&2
  done
done

cpu="$("$bench" --describe-cpu)"  # brand, core name, CPUID family/model: a VM's brand alone may be "AMD EPYC"
echo "# seconds per CFG step, best of $runs; $cpu, $threads threads; stable-diffusion.cpp $commit"
echo "| size | otter | PyTorch bf16 | PyTorch f32 | sd.cpp | PyTorch best / otter | sd.cpp / otter |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for size in $sizes; do
  o=${best[otter_$size]} tb=${best[torch_bf16_$size]} tf=${best[torch_f32_$size]} s=${best[sd_$size]}
  tbest=$(min "$tb" "$tf")
  printf "| %s | %.3f | %.3f | %.3f | %.3f | %.2fx | %.2fx |\n" "$size" "$o" "$tb" "$tf" "$s" \
    "$(echo "$tbest / $o" | bc -l)" "$(echo "$s / $o" | bc -l)"
done
