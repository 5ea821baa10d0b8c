#!/usr/bin/env bats
# scripts/gpu-session, issue #18's one command for a lent GPU machine, checked where there is no
# GPU: every part runs, says "skip" with the reason, writes its logs and a summary, and exits 0
# in seconds (so a lease is not spent on a script that breaks). On a machine with a GPU this
# test stands aside: there the script runs the real suite, minutes long.
load test_helper

setup() {
  TMP=$(mktemp -d "${BATS_TMPDIR:-/tmp}/bp.XXXXXX")
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    skip "a GPU answers here: run scripts/gpu-session itself"
  fi
  [ -f "$BERTPIPE_TOP/build/libbertpipe_cuda.a" ] || skip "this build has no CUDA backend (no nvcc)"
}
teardown() { rm -rf "$TMP"; }

@test "gpu-session without a GPU: every part skips with its reason, logs and summary written, exit 0" {
  run env -u OUT timeout 120 "$BERTPIPE_TOP/scripts/gpu-session" "$TMP/out"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  for f in summary.txt test-gpu.log bench-gpu.log nvidia-smi.txt; do [ -s "$TMP/out/$f" ]; done
  grep -qE '^gpu-session: test-gpu: exit 0 .*0 not ok, [1-9][0-9]* skipped' "$TMP/out/summary.txt"
  # each GPU test binary ran and skipped itself, naming why
  n=$(ls "$BERTPIPE_TOP"/tests/gpu/test_*.c | wc -l)
  [ "$(grep -cE '^ok 1 - .*# skip no GPU: .*error 35' "$TMP/out/test-gpu.log")" -eq "$n" ]
  grep -q '^bench-gpu: skipped, no GPU benchmark possible: ' "$TMP/out/bench-gpu.log"
  grep -qE '^gpu-session: [0-9]+ s in all' "$TMP/out/summary.txt"
}
