#!/usr/bin/env bash
# The README's otter serve table: images/s and p50/p95 latency for 1, 2, 4, 8 concurrent clients,
# with continuous batching on and off, on a model. Starts `otter serve` on a free loopback port for
# each mode and stops it after.
#
#   bench/serve_load/table.sh [MODEL] [SIZE] [STEPS] [REQUESTS_PER_CLIENT]
#   bench/serve_load/table.sh                       # the bundled model, 128x128, 20 steps, 4 requests
#   bench/serve_load/table.sh /tmp/sd15 256 10 2    # otter-bench --write-model /tmp/sd15 (SD 1.5, random weights)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
otter="$root/build/release/otter"
load="$root/build/release/bench/serve_load"
model="${1:-}"
size="${2:-128}"  # the bundled model's native size
steps="${3:-20}"
per_client="${4:-4}"
cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
echo "# otter serve: $(basename "${model:-otter-shapes}"), ${size}x${size}, $steps steps, $per_client requests per client; $cpu, $(nproc) cores"
echo "| clients | batching | images/s | p50 s | p95 s |"
echo "|---|---|---|---|---|"
for mode in on off; do
  flags=(--port 0 -q --max-batch-rows 64)
  [ -n "$model" ] && flags+=(-m "$model")
  [ "$mode" = off ] && flags+=(--no-batching)
  out="$(mktemp)"
  "$otter" serve "${flags[@]}" >"$out" &
  pid=$!
  for _ in $(seq 200); do [ -s "$out" ] && break; sleep 0.1; done
  url="$(head -1 "$out" | sed 's:/$::')"
  body="{\"prompt\":\"a red circle on a blue background\",\"steps\":$steps,\"width\":$size,\"height\":$size}"
  "$load" --url "$url" --clients 1 --requests 1 --body "$body" >/dev/null  # warm up
  for clients in 1 2 4 8; do
    r="$("$load" --url "$url" --clients "$clients" --requests "$per_client" --body "$body")"
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(f\"| {r['clients']} | $mode | {r['images_per_second']:.2f} | {r['p50_seconds']:.2f} | {r['p95_seconds']:.2f} |\")" "$r"
  done
  kill -TERM "$pid"
  wait "$pid" || true
  rm -f "$out"
done
