#!/usr/bin/env bash
# Does a dashboard being read slow the coordinator down? Runs the same noop
# sweep (`masktune run`, local workers, every result committed to SQLite)
# twice into fresh databases: alone, then while `masktune dashboard` serves
# that database to N clients requesting pages back to back (the study's
# report, its JSON, the list of studies), and prints trials/s for both and
# the requests the dashboard answered meanwhile.
#
# Usage: scripts/bench_dashboard.sh [--build DIR] [--trials 20000] [--clients 8]
#                                   [--workers 2] [--sleep-ms 0] [--rounds 2]
#                                   [--interval 0] [--batch 30]
# Each client is one curl at a time fetching --batch URLs over one keep-alive
# connection (/study/bench, /api/study/bench and / in turn), then pausing
# --interval seconds (0: back to back; --batch 1 --interval 2: a browser
# tab's pace, as the live page polls).
# Rounds alternate (alone, read, alone, read, ...) so that a machine busy
# with something else weighs on both alike.
# Needs curl. Both sweeps run on the same machine as the clients, so on a
# small machine part of any slowdown is plain CPU sharing, not SQLite.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/dashboard_port.sh"

build=build trials=20000 clients=8 workers=2 sleep_ms=0 rounds=2 interval=0 batch=30
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2 ;;
    --trials) trials=$2 ;;
    --clients) clients=$2 ;;
    --workers) workers=$2 ;;
    --sleep-ms) sleep_ms=$2 ;;
    --rounds) rounds=$2 ;;
    --interval) interval=$2 ;;
    --batch) batch=$2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_dashboard: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  [ $# -ge 2 ] || { echo "bench_dashboard: $1 needs a value" >&2; exit 2; }
  shift 2
done
mt=$build/masktune
[ -x "$mt" ] || { echo "bench_dashboard: $mt not found (make first, or --build DIR)" >&2; exit 2; }
command -v curl >/dev/null || { echo "bench_dashboard: needs curl" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

cat > "$tmp/warm.yaml" <<EOF
study: warm
benchmark: {name: noop}
attention: {a: [{oracle_top_k: {heavy_size: 0.1}}]}
EOF
cat > "$tmp/bench.yaml" <<EOF
study: bench
benchmark: {name: noop, sleep_ms: $sleep_ms}
search: {algorithm: random, num_samples: $trials, seed: 1}
attention:
  a:
    - sink: {sink_size: 16}
    - oracle_top_k: {heavy_size: {uniform: [0.01, 0.5]}}
EOF

# trials/s of the bench study into a database that already holds `warm`.
sweep() {
  local db=$1
  local t0 t1
  t0=$(date +%s.%N)
  "$mt" run "$tmp/bench.yaml" --db "$db" --workers "$workers" >/dev/null
  t1=$(date +%s.%N)
  awk -v n="$trials" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f trials/s (%.2f s)", n / (b - a), b - a }'
}

echo "noop sweep of $trials trials, $workers workers; $clients clients, pause ${interval} s ($(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)):"
for round in $(seq "$rounds"); do
  rm -f "$tmp"/*.db* "$tmp"/requests.* "$tmp/dashboard.log"
  "$mt" run "$tmp/warm.yaml" --db "$tmp/alone.db" >/dev/null
  "$mt" run "$tmp/warm.yaml" --db "$tmp/read.db" >/dev/null

  alone=$(sweep "$tmp/alone.db")

  "$mt" dashboard --db "$tmp/read.db" --bind 127.0.0.1:0 > "$tmp/dashboard.log" 2>&1 &
  dashboard=$!
  pids+=($dashboard)
  port=$(dashboard_port "$tmp/dashboard.log" bench_dashboard) || exit 1
  clients_pids=()
  for c in $(seq "$clients"); do
    : > "$tmp/requests.$c"
    (
      paths=("/study/bench" "/api/study/bench" "/")
      args=()
      for i in $(seq "$batch"); do args+=(-o /dev/null "http://127.0.0.1:$port${paths[$(((i + c) % 3))]}"); done
      while :; do
        curl -s -w '%{http_code}\n' "${args[@]}" >> "$tmp/requests.$c" || true
        [ "$interval" = 0 ] || sleep "$interval"
      done
    ) &
    clients_pids+=($!)
    pids+=($!)
  done
  sleep 0.5
  for c in $(seq "$clients"); do : > "$tmp/requests.$c"; done
  read_=$(sweep "$tmp/read.db")
  served=$(cat "$tmp"/requests.* | grep -c '^200$' || true)
  cpu=$(awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$dashboard/stat")
  for p in "${clients_pids[@]}" "$dashboard"; do kill "$p" 2>/dev/null || true; done
  wait "${clients_pids[@]}" "$dashboard" 2>/dev/null || true

  echo "  round $round: alone $alone; with the dashboard $read_, $served requests answered (200) meanwhile, dashboard CPU ${cpu} s"
done
