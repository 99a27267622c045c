#!/usr/bin/env bash
# Screenshots of `masktune report` and `masktune dashboard` for the README,
# with headless Chromium (Debian's `chromium`; installed with apt-get when
# missing), into docs/img/:
#   report.png      the top of the quickstart study's report
#   dashboard.png   the dashboard's list of studies, one of them running
# The quickstart study comes from build/quickstart.db (`make run`), or is run
# here into a temporary folder. Usage: scripts/screenshots.sh [--build DIR]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/dashboard_port.sh"

build=build
[ "${1:-}" = "--build" ] && build=$2
[ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] && { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x "$build/masktune" ] || { echo "screenshots: $build/masktune not found (make first, or --build DIR)" >&2; exit 2; }
mt=$(cd "$build" && pwd)/masktune

if ! command -v chromium >/dev/null; then
  echo "screenshots: installing chromium" >&2
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

db=$tmp/quickstart.db
if [ -f "$build/quickstart.db" ] && "$mt" status quickstart --db "$build/quickstart.db" 2>/dev/null | grep -q '(finished)'; then
  cp "$build/quickstart.db" "$db"
else
  echo "screenshots: running the quickstart sweep (no finished $build/quickstart.db)" >&2
  "$mt" run configs/examples/quickstart.yaml --db "$db" >/dev/null
fi

shot() {  # URL OUT WIDTH HEIGHT
  chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
    --force-device-scale-factor=1 --window-size="$3,$4" --screenshot="$2" "$1" >/dev/null 2>&1
}

mkdir -p docs/img
# From the temporary folder, so the page names the database as quickstart.db.
(cd "$tmp" && "$mt" report quickstart --db quickstart.db --out quickstart.html >/dev/null)
shot "file://$tmp/quickstart.html" docs/img/report.png 1280 1500

# The dashboard, with a second study running beside the finished quickstart.
cat > "$tmp/live.yaml" <<EOF
study: live-demo
benchmark: {name: noop, sleep_ms: 400}
search: {algorithm: random, num_samples: 60, seed: 2}
attention:
  topk:
    - sink: {sink_size: {grid_search: [16, 64]}}
    - oracle_top_k: {heavy_size: {loguniform: [0.01, 0.3]}}
EOF
"$mt" run "$tmp/live.yaml" --db "$db" --workers 2 >/dev/null 2>&1 &
pids+=($!)
(cd "$tmp" && exec "$mt" dashboard --db quickstart.db --bind 127.0.0.1:0 > dashboard.log 2>&1) &
pids+=($!)
port=$(dashboard_port "$tmp/dashboard.log" screenshots) || exit 1
sleep 6  # some live-demo trials settle
shot "http://127.0.0.1:$port/" docs/img/dashboard.png 1100 420

for f in docs/img/report.png docs/img/dashboard.png; do
  [ -s "$f" ] || { echo "screenshots: $f was not written" >&2; exit 1; }
  size=$(stat -c %s "$f")
  if [ "$size" -gt 300000 ] && command -v pngquant >/dev/null; then
    pngquant --force --skip-if-larger --quality 60-90 --output "$f" "$f" || true
    size=$(stat -c %s "$f")
  fi
  echo "$f: $((size / 1024)) KB"
done
