# Sourced by scripts that start `masktune dashboard --bind 127.0.0.1:0`:
# dashboard_port LOG WHO prints the port the dashboard wrote to LOG once it
# is listening (10 s at most); otherwise it prints LOG on stderr, prefixed
# by WHO, and exits the calling script with 1.
dashboard_port() {
  local log=$1 who=$2 port=
  for _ in $(seq 200); do
    port=$(sed -n 's|^dashboard: http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$log")
    [ -n "$port" ] && { echo "$port"; return; }
    sleep 0.05
  done
  echo "$who: the dashboard did not start:" >&2
  cat "$log" >&2
  exit 1
}
