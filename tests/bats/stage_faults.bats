#!/usr/bin/env bats
# Faults a stage must survive as a process (proto/frames.md, section 4: exit statuses): stop
# signals while its input is idle, and a pipeline naming the stage that failed first. Every
# wait is bounded by `timeout`, so a stage that hangs fails its test instead of the suite.
load test_helper

EVAL="$BERTPIPE_BIN/eval"   # "eval" alone is the shell builtin

# Wait (bounded) for pid to end; its exit status in $status, 124 when it did not end in time.
wait_for_exit() { # pid seconds
  status=0
  if ! timeout "$2" tail --pid="$1" -f /dev/null; then
    kill -9 "$1" 2>/dev/null
    wait "$1" 2>/dev/null || true
    status=124
    return 0
  fi
  wait "$1" || status=$?
}

# Give the stage a moment in its wait, send SIGNAL, and time it: the error line naming the
# signal must come within 1.5 s (the stage looks every 100 ms; the rest is slack for a sanitizer
# build on a loaded machine) and the exit, status 128 + N, within 5 s (an error frame may take
# its second of linger), with one error line in $TMP/err.
signal_stage() { # signal status pid stage-name
  sleep 0.3
  local t0 handled=-1 ms
  t0=$(date +%s%N)
  kill -"$1" "$3"
  for _ in $(seq 200); do
    grep -q "error: interrupted by SIG$1" "$TMP/err" 2>/dev/null && { handled=$(( ($(date +%s%N) - t0) / 1000000 )); break; }
    sleep 0.05
  done
  wait_for_exit "$3" 10
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "$4: handled after $handled ms, status $status after $ms ms: $(cat "$TMP/err")"
  [ "$status" -eq "$2" ]
  [ "$handled" -ge 0 ] && [ "$handled" -lt 1500 ]
  [ "$ms" -lt 5000 ]
  assert_one_error_line "$TMP/err" "$4"
}

# Start STAGE (its command and arguments) with an input no producer ever writes to, wait until
# it waits on it (its socket exists), then send SIGNAL: the error line names the signal and
# the input.
stop_idle() { # signal status stage-command...
  local sig=$1 want=$2
  shift 2
  rm -f "$TMP/in.sock" "$TMP/err"
  "$@" --in "ipc://$TMP/in.sock" >/dev/null 2>"$TMP/err" &
  local p=$!
  for _ in $(seq 200); do [ -S "$TMP/in.sock" ] && break; sleep 0.05; done
  signal_stage "$sig" "$want" $p "$(basename "$1")"
  refute_sanitizer "$TMP/err"
  grep -q "error: interrupted by SIG$sig (ipc://$TMP/in.sock)" "$TMP/err"
}

each_stage_stops_on() { # signal status
  stop_idle "$1" "$2" tokenize --vocab "$VOCAB"
  stop_idle "$1" "$2" batch
  stop_idle "$1" "$2" train --preset tiny --vocab "$VOCAB"
  stop_idle "$1" "$2" "$EVAL" --checkpoint "$TMP/no-model-needed-before-the-hello"
  stop_idle "$1" "$2" postprocess
  stop_idle "$1" "$2" score
  stop_idle "$1" "$2" tap --log /dev/null
  stop_idle "$1" "$2" frames2json
}

@test "SIGTERM stops every stage within a second while its input is idle (exit 143, one error line)" {
  each_stage_stops_on TERM 143
}

@test "SIGINT stops every stage within a second while its input is idle (exit 130, one error line)" {
  each_stage_stops_on INT 130
}

# A stage reading stdin that stays open and silent (after a hello, for json2frames), sending to
# a consumer: once the consumer has its hello the stage is waiting on stdin. Same promise:
# exit 128 + N within 2 s, the error frame sent on.
stop_idle_stdin() { # signal status stage-command...
  local sig=$1 want=$2
  shift 2
  rm -f "$TMP/feed" "$TMP/out.sock" "$TMP/down.jsonl"
  mkfifo "$TMP/feed"
  frames2json --in "ipc://$TMP/out.sock" >"$TMP/down.jsonl" 2>"$TMP/down.err" & local c=$!
  for _ in $(seq 200); do [ -S "$TMP/out.sock" ] && break; sleep 0.05; done
  "$@" --out "ipc://$TMP/out.sock" <"$TMP/feed" 2>"$TMP/err" & local p=$!
  exec 8>"$TMP/feed"
  [ "$1" = json2frames ] && echo '{"v":1,"k":"hello","from":"test"}' >&8
  for _ in $(seq 200); do grep -q '"k":"hello"' "$TMP/down.jsonl" 2>/dev/null && break; sleep 0.05; done
  signal_stage "$sig" "$want" $p "$1"
  exec 8>&-
  grep -q "interrupted by SIG$sig" "$TMP/err"
  wait_for_exit $c 10
  [ "$status" -eq 3 ]   # downstream was told, and says the failure was upstream's
  grep -q "upstream stage $1 failed: interrupted by SIG$sig" "$TMP/down.err"
}

@test "extract (--format lines -) and json2frames, waiting on an idle stdin, stop on SIGTERM and SIGINT" {
  stop_idle_stdin TERM 143 extract --format lines -
  stop_idle_stdin INT 130 extract --format lines -
  stop_idle_stdin TERM 143 json2frames
  stop_idle_stdin INT 130 json2frames
}

@test "SIGTERM to train while its input is idle saves the checkpoint of the last step and exits 143" {
  batches train 48 16 1 --no-shuffle --out "file:$TMP/b.batches"
  frames2json --in "file:$TMP/b.batches" | grep -v '"k":"eos"' >"$TMP/no-eos.jsonl"
  mkfifo "$TMP/feed"
  BERTPIPE_QUIET=0 train --in "ipc://$TMP/t.sock" --preset tiny --vocab "$VOCAB" --threads 1 --save "$TMP/model" \
    >/dev/null 2>"$TMP/err" & p=$!
  json2frames --out "ipc://$TMP/t.sock" <"$TMP/feed" 2>/dev/null &
  exec 8>"$TMP/feed"
  cat "$TMP/no-eos.jsonl" >&8   # 3 batches and the epoch frame, then silence
  for _ in $(seq 300); do grep -q "saved .* (end of epoch)" "$TMP/err" && break; sleep 0.1; done
  sleep 0.5
  kill -TERM $p
  wait_for_exit $p 20
  exec 8>&-
  cat "$TMP/err"
  [ "$status" -eq 143 ]
  grep -q "stopped by signal 15 at step 3" "$TMP/err"
  [ -s "$TMP/model/model.safetensors" ]
  refute_sanitizer "$TMP/err"
}

@test "a pipeline whose extract fails on a bad file names extract, not the stages that stopped after it" {
  { printf 'sentence\tlabel\n'
    for i in $(seq 40); do printf 'a good film %d\tpositive\na dull one %d\tnegative\n' "$i" "$i"; done
    printf 'so so\tneutral\n'; } >"$TMP/bad.tsv"
  run timeout 120 "$BERTPIPE_TOP/pipelines/sst" --data "$TMP/bad.tsv" --format csv --delimiter tab \
    --text-column sentence --label-column label --label-map negative,positive --validation-ratio 0.2 \
    --vocab "$VOCAB" --out "$TMP/o" --no-plot
  [ "$status" -eq 1 ]
  [[ "$output" == *"extract: error: unknown label 'neutral': the label map has 2 values ($TMP/bad.tsv:"* ]]
  [[ "$output" == *"sst: error: stage extract failed (exit status 1); stopping the pipeline"* ]]
}
