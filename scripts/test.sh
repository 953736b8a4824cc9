#!/usr/bin/env bash
# The whole test suite, with the services and tools it needs: the README's
# test command.
#
# Redis: uses the server at $REDIS_URL (default redis://127.0.0.1:6379) when it
# answers; otherwise starts a private redis-server on a free port for this run
# and stops it (by PID) afterwards. The redis-server binary is installed from
# Debian's packages when missing: the fault test runs one of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages the tests need: redis-server (the fault test runs one of its
# own), chromium, node and npm (the browser test, tests/browser.rs).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${missing[*]} from Debian's packages" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# playwright-core for the browser test, exactly as locked.
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
# The gateway's interop and browser tests run backends written with these
# GRIP libraries, pinned as in longpoll-gateway/tests/support/python.rs (the
# tests fall back to a venv of their own when this cannot install).
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  gripcontrol==4.4.0 django-eventstream==5.3.4 websockets==15.0.1 \
  || echo "scripts/test.sh: pip could not install the GRIP libraries" >&2

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
redis_pid=""
redis_dir=""
cleanup() {
  if [ -n "$redis_pid" ]; then
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  if [ -n "$redis_dir" ]; then rm -rf "$redis_dir"; fi
}
trap cleanup EXIT

if ! redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  redis_dir="$(mktemp -d)"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$redis_dir" --daemonize no >"$redis_dir/redis.log" 2>&1 &
  redis_pid=$!
  export REDIS_URL="redis://127.0.0.1:$port"
  for _ in $(seq 1 200); do
    if redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then break; fi
    sleep 0.05
  done
  redis-cli -u "$REDIS_URL" ping >/dev/null
  echo "scripts/test.sh: started redis-server (pid $redis_pid) at $REDIS_URL" >&2
fi

cargo test --workspace --all-features "$@"
