#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, one after the
# other: `fuzz/run.sh [SECONDS] [TARGET...]` (default 120 s, all targets).
# New inputs go to fuzz/work/<target>/ (not committed); the seeds in
# fuzz/corpus/<target>/ are read, never written. A crash stops the run and
# leaves its input in fuzz/artifacts/<target>/. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(cursor poll_request grip_headers publish_json publish_token gateway_config)
fi
for target in "${targets[@]}"; do
  mkdir -p "fuzz/work/$target"
  echo "fuzz/run.sh: $target for ${seconds}s" >&2
  cargo +nightly fuzz run "$target" "fuzz/work/$target" "fuzz/corpus/$target" -- \
    -dict="fuzz/dict/$target.dict" -max_total_time="$seconds" -print_final_stats=1
done
