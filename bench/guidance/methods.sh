#!/usr/bin/env bash
# Runs every guidance method of `otter generate` on one model and prints, per method, the UNet
# rows the run evaluated (and of them perturbed), the denoising time and its ratio to classic
# CFG's: what each method costs, measured through the CLI. The denoising time includes the first
# step's one-off weight preparation, so use enough steps for the ratios to mean per-step cost.
#
#   bench/guidance/methods.sh [MODEL] [SIZE] [STEPS]      (SAMPLER=ddim by default)
#
# MODEL defaults to the bundled demo model; for the full-size SD 1.5 architecture without a
# download, write the benchmark's random weights first:
#   build/release/bench/otter-bench --write-model /tmp/sd15 && bench/guidance/methods.sh /tmp/sd15 256 4
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
otter=${OTTER:-$here/build/release/otter}
model=${1:-}
size=${2:-128}  # the bundled model's native size
steps=${3:-20}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

methods=(
  "classic CFG|"
  "cfg|--guidance cfg"
  "cfg_zero_star|--guidance cfg_zero_star"
  "apg|--guidance apg:eta=0"
  "tcfg|--guidance tcfg"
  "mambo|--guidance mambo"
  "apg_mix|--guidance apg_mix"
  "fdg|--guidance fdg"
  "cfg_pp|--guidance cfg_pp"
  "pag (every step)|--guidance pag:layers=mid"
  "PerturbedAttentionGuidance|--guidance PerturbedAttentionGuidance:layers=mid"
  "seg|--guidance seg:layers=mid"
  "slg|--guidance slg:layers=mid"
  "autoguidance|--guidance autoguidance:layers=mid"
  "cfg;interval=0.28..5.42|--guidance cfg;interval=0.28..5.42"
  "cfg;adaptive=0.999|--guidance cfg;adaptive=0.999"
  "composable (2 parts)|AND"
)
printf '%-28s %7s %10s %11s %9s\n' method rows perturbed "denoise s" "vs CFG"
base=""
for entry in "${methods[@]}"; do
  name=${entry%%|*}
  options=${entry#*|}
  prompt="a red circle on a blue background"
  if [ "$options" = AND ]; then prompt="a red circle AND a blue background :0.8"; options=""; fi
  # shellcheck disable=SC2086
  log=$("$otter" generate ${model:+-m "$model"} -p "$prompt" --seed 1 --steps "$steps" -W "$size" -H "$size" \
        --sampler "${SAMPLER:-ddim}" $options -o "$out/x.png" 2>&1 >/dev/null) || { echo "$name: failed"; echo "$log" | tail -3; continue; }
  line=$(grep 'UNet rows' <<<"$log")
  rows=$(sed -E 's/.*, ([0-9]+) UNet rows.*/\1/' <<<"$line")
  perturbed=$(grep -oE '[0-9]+ perturbed' <<<"$line" | cut -d' ' -f1 || true)
  denoise=$(sed -E 's/.*denoise ([0-9.e-]+) s.*/\1/' <<<"$line")
  [ -z "$base" ] && base=$denoise
  printf '%-28s %7s %10s %11.3f %8.2fx\n' "$name" "$rows" "${perturbed:-0}" "$denoise" "$(awk -v a="$denoise" -v b="$base" 'BEGIN { print a / b }')"
done
