#!/usr/bin/env bash
# Where a held poll's memory goes, by jemalloc size class (issue 16).
#
#   bench/alloc-probe.sh DEMO_BIN N [h1|h2] [demo args...]
#
# DEMO_BIN must be built with jemalloc's statistics, which the demo leaves
# out: add `features = ["stats"]` to the tikv-jemallocator dev-dependency,
# `cargo build --release -p tower-longpoll --example demo`, copy the binary,
# undo the change. The demo is started on loopback, N polls are held with
# tools/loadgen (`hold`), and jemalloc's statistics are printed (through gdb,
# `malloc_stats_print`) before and while they are held; bench/alloc_diff.py
# prints what each held poll added, per size class. The demo is stopped by
# its PID.
set -u
cd "$(dirname "$0")/.."
BIN=$1; N=$2; MODE=${3:-h1}; shift 3 || shift $#
LOADGEN=${LOADGEN:-target/release/loadgen}
PORT=${PORT:-23191}
OUTD=$(mktemp -d /tmp/alloc-probe.XXXXXX)
"$BIN" --listen 127.0.0.1:$PORT --timeout 300 --max-per-id 200000 --max-waiters 1000000 --workers 1 "$@" >>"$OUTD/demo.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
sleep 0.5
# The statistics go to the demo's stderr, its log (opened for appending).
dump() {
  grep -E "RssAnon" /proc/$PID/status >"$OUTD/$1.status"
  gdb -p $PID -batch -ex 'call (void)_rjem_malloc_stats_print(0,0,"J")' >/dev/null 2>&1
  cp "$OUTD/demo.log" "$OUTD/$1.json"; : >"$OUTD/demo.log"
}
dump before
H2=(); [ "$MODE" = h2 ] && H2=(--http2 --h2-conns "${H2_CONNS:-100}")
"$LOADGEN" --sub-url "http://127.0.0.1:$PORT/poll/{id}" --pub-url "http://127.0.0.1:$PORT/publish/{id}" \
  --cursor since --parked-url "http://127.0.0.1:$PORT/metrics" --parked-key longpoll_waiters --pid $PID \
  "${H2[@]}" hold "$N" --idle-secs "${IDLE:-6}" >"$OUTD/loadgen.json" 2>"$OUTD/loadgen.log" &
LG=$!
for _ in $(seq 600); do
  w=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^longpoll_waiters /{print $2}')
  [ "${w:-0}" -ge "$N" ] && break
  sleep 0.1
done
sleep 2
dump held
wait $LG
python3 bench/alloc_diff.py "$OUTD/before.json" "$OUTD/held.json" "$N"
paste "$OUTD/before.status" "$OUTD/held.status"
cat "$OUTD/loadgen.json"
