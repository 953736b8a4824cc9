#!/usr/bin/env bash
# Side-by-side: our demo, nginx + Nchan (1 worker) and Pushpin, on this
# machine, in one run, driven by the same load generator (tools/loadgen).
# Prints a table of ratios; docs/benchmarks.md explains every figure.
#
#   bench/compare.sh                 # full run (about 10 minutes)
#   bench/compare.sh --quick         # small sizes, a smoke test (about 3 minutes)
#   SERVERS="demo nchan" SCENARIOS="hold fanout" bench/compare.sh
#   FAN_N=5000 FAN_ROUNDS=5 SERVERS="demo nchan" SCENARIOS=fanout bench/compare.sh
#   (every size below can be set from the environment the same way)
#   DEMO_BIN=/tmp/demo-before SERVERS="demo nchan" SCENARIOS=churn bench/compare.sh
#   (a demo built elsewhere, for before/after comparisons)
#
# Installs Debian's nginx-light, libnginx-mod-nchan, pushpin and wrk when
# missing. Every server listens on loopback only, is started by this script
# and stopped by its PID (and the PIDs of its children) when it is done.
# Results: one JSON line per run in $OUT (default: a temp dir, printed).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
  esac
done
SERVERS=${SERVERS:-"demo nchan pushpin gateway"}
# The demo's own options: one runtime worker, as Nchan runs one worker process.
DEMO_ARGS=${DEMO_ARGS:-"--workers 1"}
# fanout_h2 (H2_N polls on one id over HTTP/2) is not in the default list.
SCENARIOS=${SCENARIOS:-"hold hold_h2 fanout unicast churn passthrough"}
# Wait while other processes keep the CPUs busier than this (percent of all
# cores, sampled over 2 s between runs), at most QUIET_WAIT seconds per run.
MAX_BUSY=${MAX_BUSY:-30}
# Runs of fanout and unicast per server, interleaved; the table shows medians.
REPS=${REPS:-3}
QUIET_WAIT=${QUIET_WAIT:-60}

if [ "$QUICK" = 1 ]; then
  : "${HOLD_N:=2000}"; : "${HOLD_IDLE:=3}"; : "${H2_N:=20000}"; : "${H2_CONNS:=100}"; : "${FAN_N:=2000}"; : "${FAN_ROUNDS:=3}"
  : "${UNI_N:=200}"; : "${UNI_RATE:=1000}"; : "${UNI_SECS:=3}"; : "${CHURN_N:=1000}"; : "${CHURN_C:=3}"; : "${WRK_SECS:=3}"; : "${WRK_RUNS:=1}"
else
  : "${HOLD_N:=10000}"; : "${HOLD_IDLE:=10}"; : "${H2_N:=100000}"; : "${H2_CONNS:=500}"; : "${FAN_N:=10000}"; : "${FAN_ROUNDS:=3}"
  : "${UNI_N:=1000}"; : "${UNI_RATE:=2000}"; : "${UNI_SECS:=8}"; : "${CHURN_N:=5000}"; : "${CHURN_C:=8}"; : "${WRK_SECS:=8}"; : "${WRK_RUNS:=4}"
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || missing+=(libnginx-mod-nchan)
command -v pushpin >/dev/null 2>&1 || missing+=(pushpin)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  echo "compare.sh: installing ${missing[*]} from Debian's packages" >&2
  as_root apt-get update -qq
  # Debian's packages start their services where an init system runs: this
  # script runs its own instances on other ports.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The demo, the load generator (tools/loadgen) and the gateway (its own
# crate, longpoll-gateway/), or GATEWAY_BIN pointing at a gateway built
# elsewhere.
# Two cargo runs: with `--example demo`, cargo builds only example targets of
# every package named, and the load generator's binary would be missing.
BUILD=(-p longpoll-loadgen)
if [ -z "${GATEWAY_BIN:-}" ]; then
  BUILD+=(-p longpoll-gateway)
  GATEWAY_BIN="$ROOT/target/release/longpoll-gateway"
fi
# DEMO_BIN runs a demo built elsewhere (a before/after comparison).
if [ -z "${DEMO_BIN:-}" ]; then
  cargo build --release -p tower-longpoll --example demo >&2
  DEMO_BIN="$ROOT/target/release/examples/demo"
fi
cargo build --release "${BUILD[@]}" >&2
LOADGEN="$ROOT/target/release/loadgen"

WORK=$(mktemp -d /tmp/lp-compare.XXXXXX)
OUT=${OUT:-$WORK/results.jsonl}
: >"$OUT"
STARTED=()   # PIDs this script started and has not stopped yet

# All descendants of a PID, read from /proc (children first found, then theirs).
descendants() {
  local all=("$1") i=0 pid
  while [ $i -lt ${#all[@]} ]; do
    for pid in $(awk -v p="${all[$i]}" '{ sub(/.*\) /, ""); split($0, f, " "); if (f[2] == p) print FILENAME }' /proc/[0-9]*/stat 2>/dev/null | cut -d/ -f3); do
      all+=("$pid")
    done
    i=$((i + 1))
  done
  echo "${all[@]}"
}

# Stops a process and its descendants, by PID: TERM, then KILL after 10 s.
stop() {
  local root=$1 pids pid
  pids=$(descendants "$root")
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 100); do
    local alive=0
    for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
  wait "$root" 2>/dev/null || true
  local keep=()
  for pid in "${STARTED[@]}"; do [ "$pid" != "$root" ] && keep+=("$pid"); done
  STARTED=("${keep[@]}")
}

cleanup() {
  for pid in "${STARTED[@]}"; do stop "$pid"; done
  echo "compare.sh: results in $OUT, configs and logs in $WORK" >&2
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "compare.sh: nothing listens on port $1" >&2
  return 1
}

# Busy percent of all CPUs over 2 s.
busy() {
  read -r _ a b c idle1 rest1 < <(head -1 /proc/stat)
  local total1=$((a + b + c + idle1))
  for n in $rest1; do total1=$((total1 + n)); done
  sleep 2
  read -r _ a b c idle2 rest2 < <(head -1 /proc/stat)
  local total2=$((a + b + c + idle2))
  for n in $rest2; do total2=$((total2 + n)); done
  echo $(( 100 - 100 * (idle2 - idle1) / (total2 - total1) ))
}

# Waits (bounded) until other processes leave the CPUs mostly idle; sets LOAD.
quiet() {
  local waited=0 now
  now=$(busy)
  while [ "$now" -gt "$MAX_BUSY" ] && [ $waited -lt "$QUIET_WAIT" ]; do
    echo "compare.sh: CPUs ${now}% busy with other work; waiting" >&2
    sleep 20
    waited=$((waited + 22))
    now=$(busy)
  done
  LOAD="busy=${now}% load1=$(cut -d' ' -f1 /proc/loadavg)"
}

DEMO_PORT=23101 NCHAN_PORT=23102 PUSHPIN_PORT=23103 PUSHPIN_PUB=23104 GRIP_PORT=23105
GATEWAY_PORT=23106 GATEWAY_PUB=23107

start_demo() {
  local extra=("$@")
  "$DEMO_BIN" --listen "127.0.0.1:$DEMO_PORT" --timeout 300 --max-per-id 200000 \
    --max-waiters 1000000 $DEMO_ARGS "${extra[@]}" >"$WORK/demo.log" 2>&1 &
  SERVER_PID=$!
  STARTED+=("$SERVER_PID")
  wait_port $DEMO_PORT || return 1
  ARGS=(--sub-url "http://127.0.0.1:$DEMO_PORT/poll/{id}"
        --pub-url "http://127.0.0.1:$DEMO_PORT/publish/{id}"
        --cursor since
        --parked-url "http://127.0.0.1:$DEMO_PORT/metrics" --parked-key longpoll_waiters
        --pid "$SERVER_PID")
}

start_nchan() {
  mkdir -p "$WORK/nginx/tmp"
  cat >"$WORK/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  server {
    listen 127.0.0.1:$NCHAN_PORT backlog=4096;
    location ~ ^/sub/([^/]+)$ {
      nchan_subscriber longpoll;
      nchan_channel_id \$1;
      nchan_subscriber_timeout 300s;
      nchan_subscriber_first_message newest;
    }
    location ~ ^/pub/([^/]+)$ {
      nchan_publisher;
      nchan_channel_id \$1;
      nchan_message_buffer_length 64;
      nchan_message_timeout 5m;
    }
    location = /status { nchan_stub_status; }
  }
}
EOF
  /usr/sbin/nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx/out.log" 2>&1 &
  SERVER_PID=$!
  STARTED+=("$SERVER_PID")
  wait_port $NCHAN_PORT || return 1
  ARGS=(--sub-url "http://127.0.0.1:$NCHAN_PORT/sub/{id}"
        --pub-url "http://127.0.0.1:$NCHAN_PORT/pub/{id}"
        --cursor nchan
        --parked-url "http://127.0.0.1:$NCHAN_PORT/status" --parked-key "subscribers:"
        --pid "$SERVER_PID")
}

start_pushpin() {
  mkdir -p "$WORK/pushpin/run" "$WORK/pushpin/log"
  # A GRIP backend that holds every poll on the channel named by its last
  # path segment: Pushpin asks it what to do with each request.
  "$LOADGEN" grip-backend --listen "127.0.0.1:$GRIP_PORT" --hold-secs 300 \
    >"$WORK/pushpin/backend.log" 2>&1 &
  BACKEND_PID=$!
  STARTED+=("$BACKEND_PID")
  echo "* 127.0.0.1:$GRIP_PORT" >"$WORK/pushpin/routes"
  # Debian's configuration, with this run's ports and directories.
  sed -e "s|^rundir=.*|rundir=$WORK/pushpin/run|" \
      -e "s|^logdir=.*|logdir=$WORK/pushpin/log|" \
      -e "s|^http_port=.*|http_port=127.0.0.1:$PUSHPIN_PORT|" \
      -e "s|^push_in_http_port=.*|push_in_http_port=$PUSHPIN_PUB|" \
      -e "s|^routesfile=.*|routesfile=$WORK/pushpin/routes|" \
      -e "s|tcp://127.0.0.1:5560|tcp://127.0.0.1:23110|" \
      -e "s|tcp://127.0.0.1:5562|tcp://127.0.0.1:23112|" \
      -e "s|tcp://127.0.0.1:5563|tcp://127.0.0.1:23113|" \
      -e "s|^services=.*|services=condure,zurl,pushpin-proxy,pushpin-handler|" \
      /etc/pushpin/pushpin.conf >"$WORK/pushpin/pushpin.conf"
  # Debian points the proxy at a system-wide zurl (its HTTP client towards
  # backends); this instance runs its own, started by the runner.
  sed -i "s|^\[proxy\]|[proxy]\nzurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in\nzurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream\nzurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out|" \
    "$WORK/pushpin/pushpin.conf"
  pushpin --config "$WORK/pushpin/pushpin.conf" >"$WORK/pushpin/out.log" 2>&1 &
  SERVER_PID=$!
  STARTED+=("$SERVER_PID")
  wait_port $GRIP_PORT || return 1
  wait_port $PUSHPIN_PORT || return 1
  wait_port $PUSHPIN_PUB || return 1
  ARGS=(--sub-url "http://127.0.0.1:$PUSHPIN_PORT/sub/{id}"
        --pub-url "http://127.0.0.1:$PUSHPIN_PUB/publish/"
        --pub-body '{"items":[{"channel":"{id}","formats":{"http-response":{"body":"{msg}"}}}]}'
        --pub-header "Content-Type: application/json"
        --cursor none --connect-rate 400
        --parked-url "http://127.0.0.1:$GRIP_PORT/holds" --parked-key holds --parked-cumulative
        --settle-ms 1500 --max-secs 60
        --pid "$SERVER_PID")
}

# The gateway holding polls itself (`--route`), with this crate's wire
# contract; publishes go to its publish API. Its upstream (a GRIP backend) is
# not asked for these routes.
start_gateway() {
  mkdir -p "$WORK/gateway"
  "$LOADGEN" grip-backend --listen "127.0.0.1:$GRIP_PORT" --hold-secs 300 \
    >"$WORK/gateway/backend.log" 2>&1 &
  BACKEND_PID=$!
  STARTED+=("$BACKEND_PID")
  "$GATEWAY_BIN" --listen "127.0.0.1:$GATEWAY_PORT" --publish-listen "127.0.0.1:$GATEWAY_PUB" \
    --upstream "http://127.0.0.1:$GRIP_PORT" --route '/poll/{client}' --timeout 300 \
    --max-waiters 1000000 --max-per-id 200000 >"$WORK/gateway/out.log" 2>&1 &
  SERVER_PID=$!
  STARTED+=("$SERVER_PID")
  wait_port $GRIP_PORT || return 1
  wait_port $GATEWAY_PORT || return 1
  wait_port $GATEWAY_PUB || return 1
  ARGS=(--sub-url "http://127.0.0.1:$GATEWAY_PORT/poll/{id}"
        --pub-url "http://127.0.0.1:$GATEWAY_PUB/publish/{id}"
        --cursor since
        --parked-url "http://127.0.0.1:$GATEWAY_PUB/metrics" --parked-key longpoll_waiters
        --pid "$SERVER_PID")
}

stop_server() {
  stop "$SERVER_PID"
  if [ -n "${BACKEND_PID:-}" ]; then stop "$BACKEND_PID"; BACKEND_PID=""; fi
}

run() {
  local server=$1 scenario=$2
  shift 2
  quiet
  if ! "start_$server"; then
    echo "compare.sh: $server did not start (logs in $WORK)" >&2
    stop_server
    return 0
  fi
  echo "compare.sh: $server $scenario ($LOAD)" >&2
  if "$LOADGEN" "${ARGS[@]}" --label "$server|$LOAD" "$@" >"$WORK/line" 2>>"$WORK/loadgen.log"; then
    tail -1 "$WORK/line" | tee -a "$OUT"
  else
    echo "compare.sh: $server $scenario failed (see $WORK/loadgen.log)" >&2
  fi
  stop_server
}

wrk_rate() {
  wrk -t1 -c64 -d"${WRK_SECS}s" "http://127.0.0.1:$DEMO_PORT/" | awk '/Requests\/sec/ { print $2 }'
}

# One wrk measurement of the demo, with the layer or without (--no-layer),
# after a 2 s warm-up.
wrk_demo() {
  start_demo "$@"
  wrk -t1 -c64 -d2s "http://127.0.0.1:$DEMO_PORT/" >/dev/null
  wrk_rate
  stop_server
}

passthrough() {
  local bare=() layered=() run
  for run in $(seq 1 "$WRK_RUNS"); do
    quiet
    # Alternate which goes first, so that drift over the runs favours neither.
    if [ $((run % 2)) = 1 ]; then
      bare+=("$(wrk_demo --no-layer)")
      layered+=("$(wrk_demo)")
    else
      layered+=("$(wrk_demo)")
      bare+=("$(wrk_demo --no-layer)")
    fi
  done
  local line
  line=$(printf '{"scenario":"passthrough","label":"demo|%s","bare_rps":[%s],"layered_rps":[%s]}' \
    "$LOAD" "$(IFS=,; echo "${bare[*]}")" "$(IFS=,; echo "${layered[*]}")")
  echo "$line" | tee -a "$OUT"
}

# fanout and unicast run REPS times, each time on every server in turn.
expanded=""
for scenario in $SCENARIOS; do
  case "$scenario" in
    fanout|unicast)
      if [ "$REPS" -gt 1 ]; then
        for rep in $(seq 1 "$REPS"); do expanded="$expanded ${scenario}_$rep"; done
        continue
      fi ;;
  esac
  expanded="$expanded $scenario"
done
for scenario in $expanded; do
  for server in $SERVERS; do
    # Pushpin takes minutes where the others take seconds: one run each.
    case "$server:$scenario" in pushpin:*_[2-9]) continue ;; esac
    if [ "$server" = gateway ] && [ -z "${GATEWAY_BIN:-}" ]; then
      echo "compare.sh: no GATEWAY_BIN: the gateway is not measured" >&2
      continue
    fi
    case "$scenario" in
      hold) run "$server" hold hold "$HOLD_N" --idle-secs "$HOLD_IDLE" ;;
      hold_h2)
        # HTTP/2 cleartext with prior knowledge: only the demo speaks it here.
        if [ "$server" = demo ]; then
          run demo hold_h2 --http2 --h2-conns "$H2_CONNS" hold "$H2_N" --idle-secs "$HOLD_IDLE"
        fi
        ;;
      fanout) run "$server" fanout fanout "$FAN_N" --rounds "$FAN_ROUNDS" ;;
      fanout_h2)
        # H2_N polls on one id as streams of H2_CONNS HTTP/2 connections:
        # more polls than one process may have sockets.
        if [ "$server" = demo ]; then
          run demo fanout_h2 --http2 --h2-conns "$H2_CONNS" fanout "$H2_N" --rounds "$FAN_ROUNDS"
        fi
        ;;
      unicast) run "$server" unicast unicast "$UNI_N" "$UNI_RATE" --secs "$UNI_SECS" ;;
      fanout_*|unicast_*) run "$server" "${scenario%_*}" "${scenario%_*}" \
        $([ "${scenario%_*}" = fanout ] && echo "$FAN_N --rounds $FAN_ROUNDS" || echo "$UNI_N $UNI_RATE --secs $UNI_SECS") ;;
      churn) run "$server" churn churn "$CHURN_N" "$CHURN_C" ;;
      passthrough) if [ "$server" = demo ]; then passthrough; fi ;;
    esac
  done
done

python3 "$ROOT/bench/table.py" "$OUT"
