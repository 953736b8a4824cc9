#!/usr/bin/env bash
# Soak: the chaos workload for MINUTES (default 30) against a release build
# of the demo (in memory), the demo on Redis (--redis URL) or the gateway
# (--gateway); writes target/soak/<target>/soak.{csv,png} and exits non-zero
# if an event was missed or repeated, polls stayed parked, or memory grew.
# Not part of CI: it runs for half an hour. Every round of clients uses new
# ids, so the demo keeps ids for 2 minutes (--id-ttl 120): memory reaches its
# plateau within the first fifth of the run, which is the warm-up.
#
#   scripts/soak.sh [MINUTES] [--redis URL | --gateway] [--clients N]
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=30
target=memory
redis_url=""
clients=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --redis) target=redis; redis_url="$2"; shift 2 ;;
    --gateway) target=gateway; shift ;;
    --clients) clients="$2"; shift 2 ;;
    *) minutes="$1"; shift ;;
  esac
done

font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
if [ ! -f "$font" ]; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q fonts-dejavu-core >/dev/null; else sudo apt-get install -y -q fonts-dejavu-core >/dev/null; fi
fi

out="target/soak/$target"
mkdir -p "$out"
cargo build --release --manifest-path tools/soak/Cargo.toml -q
log="$out/server.log"
case "$target" in
  memory)
    cargo build --release --example demo -q
    target/release/examples/demo --listen 127.0.0.1:0 --timeout 0.7 --max-per-id 4 \
      --event-ttl 60 --id-ttl 120 >"$log" 2>&1 &
    ;;
  redis)
    cargo build --release --features redis --example demo -q
    target/release/examples/demo --listen 127.0.0.1:0 --timeout 0.7 --max-per-id 4 \
      --event-ttl 60 --id-ttl 120 --redis "$redis_url" --redis-prefix "lp-soak-$$" >"$log" 2>&1 &
    ;;
  gateway)
    cargo build --release -p longpoll-gateway -q
    target/release/longpoll-gateway --listen 127.0.0.1:0 --publish-listen 127.0.0.1:0 \
      --upstream http://127.0.0.1:9 --route '/poll/{client}' --timeout 0.7 --max-per-id 4 >"$log" 2>&1 &
    ;;
esac
server_pid=$!
trap 'kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  grep -q "^listening on http://" "$log" && break
  sleep 0.1
done
polls="$(sed -n 's|^listening on http://||p' "$log" | head -1)"
publishes="$(sed -n 's|^publish API on http://||p' "$log" | head -1)"
publishes="${publishes:-$polls}"
echo "soak: $target server (pid $server_pid) polls on $polls, publishes on $publishes, for $minutes min" >&2

tools/soak/target/release/longpoll-soak --polls "$polls" --publishes "$publishes" \
  --metrics "$publishes" --pid "$server_pid" --minutes "$minutes" --clients "$clients" \
  --out "$out" --font "$font"
