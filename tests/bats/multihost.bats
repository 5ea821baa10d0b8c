#!/usr/bin/env bats
# Several machines, made of Linux network namespaces: a bridge in a namespace of its own joins a
# training node (10.77.0.1) and two CPU nodes (10.77.0.2, 10.77.0.3) by veth pairs, on a subnet
# that exists only inside them. The CPU nodes run `pipelines/sst --connect` (extract --shard
# K/2 and tokenize), the training node `pipelines/sst --listen --producers 2` (batch, train,
# eval, postprocess, score), over tcp across the namespaces, as docs/scale.md tells a user to.
# The result is the single-host run's, to the byte; a node killed mid-stream or never started
# is named. Each test makes its own namespaces (names with the test's pid) and teardown removes
# them and everything running in them, pass or fail. Skipped where `ip netns` is not permitted.
load test_helper

SUBNET=10.77.0
TRAINER=$SUBNET.1

setup() {
  TMP=$(mktemp -d "${BATS_TMPDIR:-/tmp}/bp.XXXXXX")
  NS_PREFIX="bpmh$$t${BATS_TEST_NUMBER}"
  NAMESPACES=()
  export BERTPIPE_BIN
}

# The three hosts and their bridge; the test is skipped where namespaces cannot be made.
make_hosts() {
  command -v ip >/dev/null || skip "no ip command (iproute2): cannot make network namespaces"
  local why
  why=$(ip netns add "${NS_PREFIX}sw" 2>&1) || skip "ip netns is unavailable or not permitted here: $why"
  NAMESPACES+=("${NS_PREFIX}sw")
  ip -n "${NS_PREFIX}sw" link add br0 type bridge
  ip -n "${NS_PREFIX}sw" link set br0 up
  local i
  for i in 1 2 3; do host "$i"; done
  PORT=$(( 20000 + RANDOM % 20000 ))
}

# host N — namespace PREFIX-hN with address SUBNET.N on eth0, wired to the bridge.
host() {
  local ns="${NS_PREFIX}h$1" sw="${NS_PREFIX}sw"
  ip netns add "$ns"
  NAMESPACES+=("$ns")
  ip -n "$sw" link add "p$1" type veth peer name eth0 netns "$ns"
  ip -n "$sw" link set "p$1" master br0 up
  ip -n "$ns" addr add "$SUBNET.$1/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}

teardown() {
  local ns pids
  for ns in "${NAMESPACES[@]}"; do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  done
  jobs -p | xargs -r kill -9 2>/dev/null || true
  wait 2>/dev/null || true
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$TMP"
}

on() { # N COMMAND... — run COMMAND on host N
  local ns="${NS_PREFIX}h$1"; shift
  ip netns exec "$ns" "$@"
}

sst() { "$BERTPIPE_TOP/pipelines/sst" --epochs 1 --no-plot "$@"; }

# A tap that logs whole frames (the pipelines' BERTPIPE_TAP_AFTER taps are --brief), so the
# log of the batch stream can be hashed.
full_tap() {
  printf '#!/bin/sh\nfor a; do shift; [ "$a" = --brief ] || set -- "$@" "$a"; done\nexec "%s/tap" "$@"\n' \
    "$BERTPIPE_BIN" >"$TMP/full-tap"
  chmod +x "$TMP/full-tap"
  echo "$TMP/full-tap"
}
# The batch stream a run's tap logged, without the hello's pid, hashed.
stream_sha() { sed 's/"pid":[0-9]*,//' "$1/tap-batch.jsonl" | sha256sum | cut -d' ' -f1; }

@test "two CPU nodes and a training node, over tcp between namespaces, give the single-host run to the byte" {
  make_hosts
  tap=$(full_tap)
  BERTPIPE_TAP_AFTER=batch BERTPIPE_TAP=$tap sst --out "$TMP/one" 2>"$TMP/err-one"
  # the hosts see each other, and only on the namespaces' subnet
  on 2 ip route get "$TRAINER" | grep -q "dev eth0"
  ! ip addr show | grep -qF "inet $SUBNET."
  BERTPIPE_TAP_AFTER=batch BERTPIPE_TAP=$tap on 1 "$BERTPIPE_TOP/pipelines/sst" --epochs 1 --no-plot \
    --listen "tcp://$TRAINER:$PORT" --producers 2 --out "$TMP/trainer" 2>"$TMP/err-trainer" & trainer=$!
  on 2 "$BERTPIPE_TOP/pipelines/sst" --connect "tcp://$TRAINER:$PORT" --shard 0/2 --out "$TMP/cpu1" 2>"$TMP/err-cpu1" & cpu1=$!
  on 3 "$BERTPIPE_TOP/pipelines/sst" --connect "tcp://$TRAINER:$PORT" --shard 1/2 --out "$TMP/cpu2" 2>"$TMP/err-cpu2"
  wait "$cpu1"
  wait "$trainer" || { cat "$TMP"/err-*; false; }
  # each CPU node sent its share: between them, every training example once
  grep -q 'shard 0/2' "$TMP/err-cpu1" && grep -q 'shard 1/2' "$TMP/err-cpu2"
  # the same batch stream, the same weights, the same score
  [ -s "$TMP/one/tap-batch.jsonl" ]
  [ "$(stream_sha "$TMP/trainer")" = "$(stream_sha "$TMP/one")" ]
  cmp "$TMP/one/model/model.safetensors" "$TMP/trainer/model/model.safetensors"
  cmp "$TMP/one/metrics.json" "$TMP/trainer/metrics.json"
  grep -q '"accuracy"' "$TMP/trainer/metrics.json"
  grep -qF '"role": "trainer"' "$TMP/trainer/run_config.json"
  grep -qF '"role": "tokenizer"' "$TMP/cpu1/run_config.json"
  # plain tcp off loopback: the binding stage says it is unauthenticated, once
  [ "$(grep -c "warning: plain tcp on" "$TMP/err-trainer")" -eq 1 ]
  refute_sanitizer "$TMP"/err-*
}

@test "the same run with CURVE: keys from keygen in the environment, the single-host weights, no plain-tcp warning; a node without the key is refused" {
  make_hosts
  "$BERTPIPE_BIN/keygen" --out "$TMP/trainer-key" 2>/dev/null
  sst --out "$TMP/one" 2>"$TMP/err-one"
  BERTPIPE_CURVE_KEY="$TMP/trainer-key.key" on 1 "$BERTPIPE_TOP/pipelines/sst" --epochs 1 --no-plot \
    --listen "tcp://$TRAINER:$PORT" --producers 2 --out "$TMP/trainer" 2>"$TMP/err-trainer" & trainer=$!
  # a node that lacks the trainer's public key gets nothing in, and says why
  status=0
  BERTPIPE_CONNECT_TIMEOUT=20 on 3 "$BERTPIPE_TOP/pipelines/sst" --connect "tcp://$TRAINER:$PORT" --shard 1/2 \
    --out "$TMP/plain" 2>"$TMP/err-plain" || status=$?
  [ "$status" -ne 0 ]
  grep -qiE "curve|security|handshake" "$TMP/err-plain"
  BERTPIPE_CURVE_SERVER="$TMP/trainer-key.pub" on 2 "$BERTPIPE_TOP/pipelines/sst" --connect "tcp://$TRAINER:$PORT" \
    --shard 0/2 --out "$TMP/cpu1" 2>"$TMP/err-cpu1" & cpu1=$!
  BERTPIPE_CURVE_SERVER="$TMP/trainer-key.pub" on 3 "$BERTPIPE_TOP/pipelines/sst" --connect "tcp://$TRAINER:$PORT" \
    --shard 1/2 --out "$TMP/cpu2" 2>"$TMP/err-cpu2"
  wait "$cpu1"
  wait "$trainer" || { cat "$TMP"/err-*; false; }
  cmp "$TMP/one/model/model.safetensors" "$TMP/trainer/model/model.safetensors"
  cmp "$TMP/one/metrics.json" "$TMP/trainer/metrics.json"
  ! grep -q "plain tcp" "$TMP/err-trainer"
  refute_sanitizer "$TMP/err-trainer" "$TMP/err-cpu1" "$TMP/err-cpu2"
}

# The pid of the stage NAME running on host N (the node's own processes, never found by name
# outside it).
stage_pid() { # N NAME
  local p
  for p in $(ip netns pids "${NS_PREFIX}h$1"); do
    [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$2" ] && { echo "$p"; return 0; }
  done
  return 1
}

@test "a CPU node's tokenize killed mid-stream: the training node fails, naming the missing eos and its address" {
  make_hosts
  on 1 "$BERTPIPE_TOP/pipelines/sst" --epochs 1 --no-plot --listen "tcp://$TRAINER:$PORT" --producers 2 \
    --out "$TMP/trainer" 2>"$TMP/err-trainer" & trainer=$!
  on 2 "$BERTPIPE_TOP/pipelines/sst" --connect "tcp://$TRAINER:$PORT" --shard 0/2 --out "$TMP/cpu1" 2>"$TMP/err-cpu1" &
  # the second node's examples come slowly, so its tokenize is mid-stream when it is killed
  BERTPIPE_TAP_AFTER=extract BERTPIPE_TAP="$BERTPIPE_BIN/tap --delay-ms 5" on 3 "$BERTPIPE_TOP/pipelines/sst" \
    --connect "tcp://$TRAINER:$PORT" --shard 1/2 --out "$TMP/cpu2" 2>"$TMP/err-cpu2" &
  # under way: the training node's batch holds features from both nodes
  for _ in $(seq 300); do
    p=$(stage_pid 3 tokenize) && [ -n "$(ip netns exec "${NS_PREFIX}h1" ss -Htn state established "sport = :$PORT")" ] &&
      [ "$(ip netns exec "${NS_PREFIX}h1" ss -Htn state established "sport = :$PORT" | wc -l)" -ge 2 ] && break
    sleep 0.1
  done
  [ -n "$p" ]
  sleep 1
  kill -9 "$p"
  status=0
  wait "$trainer" || status=$?
  cat "$TMP/err-trainer"
  [ "$status" -ne 0 ]
  grep -qE "^batch: error: a producer disconnected before its eos: 1 of 2 eos received after [0-9]+ frames; 1 eos missing \(tcp://$TRAINER:$PORT\)" \
    "$TMP/err-trainer"
  grep -q "sst: error: stage batch failed" "$TMP/err-trainer"
  [ ! -e "$TMP/trainer/model/model.safetensors" ]
  refute_sanitizer "$TMP/err-trainer"
}

@test "a CPU node that never comes up: the training node stops within BERTPIPE_CONNECT_TIMEOUT, naming the address" {
  make_hosts
  BERTPIPE_CONNECT_TIMEOUT=3 on 1 "$BERTPIPE_TOP/pipelines/sst" --epochs 1 --no-plot \
    --listen "tcp://$TRAINER:$PORT" --producers 2 --out "$TMP/trainer" 2>"$TMP/err-trainer" & trainer=$!
  on 2 "$BERTPIPE_TOP/pipelines/sst" --connect "tcp://$TRAINER:$PORT" --shard 0/2 --out "$TMP/cpu1" 2>"$TMP/err-cpu1" &
  status=0
  wait "$trainer" || status=$?
  cat "$TMP/err-trainer"
  [ "$status" -eq 1 ]
  grep -qF "batch: error: 1 of 2 producers connected within 3 s (BERTPIPE_CONNECT_TIMEOUT)" "$TMP/err-trainer"
  grep -qF "(tcp://$TRAINER:$PORT)" "$TMP/err-trainer"
  grep -q "sst: error: stage batch failed (exit status 1)" "$TMP/err-trainer"
  refute_sanitizer "$TMP/err-trainer"
}

@test "a training node that never comes up: the CPU node stops within BERTPIPE_CONNECT_TIMEOUT, naming the address" {
  make_hosts
  status=0
  BERTPIPE_CONNECT_TIMEOUT=3 on 2 "$BERTPIPE_TOP/pipelines/sst" --connect "tcp://$TRAINER:$PORT" --shard 0/2 \
    --out "$TMP/cpu1" 2>"$TMP/err-cpu1" || status=$?
  cat "$TMP/err-cpu1"
  [ "$status" -eq 1 ]
  grep -qF "tokenize: error: no consumer connected within 3 s (BERTPIPE_CONNECT_TIMEOUT)" "$TMP/err-cpu1"
  grep -qF "(tcp://$TRAINER:$PORT)" "$TMP/err-cpu1"
  grep -q "sst: error: stage tokenize failed (exit status 1)" "$TMP/err-cpu1"
  refute_sanitizer "$TMP/err-cpu1"
}

@test "the multi-host options are checked before anything runs: usage errors exit 2" {
  for bad in "--listen tcp://h:1 --connect tcp://h:1" "--listen 10.77.0.1:5555" "--connect tcp://h:1 --shard 2/2" \
             "--connect tcp://h:1 --shard 1" "--listen tcp://h:1 --producers 0" "--listen tcp://h:1 --shard 0/2" \
             "--connect tcp://h:1 --producers 2" "--shard 0/2" "--producers 2"; do
    # shellcheck disable=SC2086
    run "$BERTPIPE_TOP/pipelines/sst" $bad --out "$TMP/u"
    [ "$status" -eq 2 ] || { echo "$bad: status $status: $output"; false; }
    [[ $output == "sst: error: "*"(see sst --help)" ]] || { echo "$bad: $output"; false; }
  done
  [ ! -e "$TMP/u" ]
  run "$BERTPIPE_TOP/pipelines/squad" --connect tcp://h:1 --shard x/2
  [ "$status" -eq 2 ]
  [[ $output == *"--shard wants K/N"* ]]
}

@test "squad: two CPU nodes and a training node give the single-host run's weights and EM/F1" {
  make_hosts
  squad() { "$BERTPIPE_TOP/pipelines/squad" --epochs 1 --no-plot "$@"; }
  squad --out "$TMP/one" 2>"$TMP/err-one"
  on 1 "$BERTPIPE_TOP/pipelines/squad" --epochs 1 --no-plot --listen "tcp://$TRAINER:$PORT" --producers 2 \
    --out "$TMP/trainer" 2>"$TMP/err-trainer" & trainer=$!
  on 2 "$BERTPIPE_TOP/pipelines/squad" --connect "tcp://$TRAINER:$PORT" --shard 0/2 --out "$TMP/cpu1" 2>"$TMP/err-cpu1" & cpu1=$!
  on 3 "$BERTPIPE_TOP/pipelines/squad" --connect "tcp://$TRAINER:$PORT" --shard 1/2 --out "$TMP/cpu2" 2>"$TMP/err-cpu2"
  wait "$cpu1"
  wait "$trainer" || { cat "$TMP"/err-*; false; }
  cmp "$TMP/one/model/model.safetensors" "$TMP/trainer/model/model.safetensors"
  cmp "$TMP/one/metrics.json" "$TMP/trainer/metrics.json"
  cmp "$TMP/one/predictions.json" "$TMP/trainer/predictions.json"
  grep -q '"f1"' "$TMP/trainer/metrics.json"
  refute_sanitizer "$TMP"/err-*
}

# BERTPIPE_CONNECT_TIMEOUT on loopback (no namespaces needed).
@test "BERTPIPE_CONNECT_TIMEOUT names a producer that never connected, and never cuts off a slow consumer" {
  port=$(free_port)
  examples train 3 >"$TMP/ex.jsonl"
  BERTPIPE_CONNECT_TIMEOUT=2 tap --producers 2 --log "$TMP/log" --in "tcp://127.0.0.1:$port" --out "file:$TMP/o" 2>"$TMP/err" &
  tap_pid=$!
  json2frames "$TMP/ex.jsonl" --out "tcp://127.0.0.1:$port" 2>/dev/null &
  status=0
  wait "$tap_pid" || status=$?
  [ "$status" -eq 1 ]
  grep -qF "tap: error: 1 of 2 producers connected within 2 s (BERTPIPE_CONNECT_TIMEOUT)" "$TMP/err"
  grep -qF "(tcp://127.0.0.1:$port)" "$TMP/err"
  # a consumer that is there but slow (3 frames, 1.5 s each) outlasts a 1 s connect timeout
  port=$(free_port)
  BERTPIPE_CONNECT_TIMEOUT=1 tap --delay-ms 1500 --log "$TMP/slow" --in "tcp://127.0.0.1:$port" --out "file:$TMP/slow.frames" 2>"$TMP/err-slow" &
  tap_pid=$!
  BERTPIPE_CONNECT_TIMEOUT=1 BERTPIPE_HWM=1 json2frames "$TMP/ex.jsonl" --out "tcp://127.0.0.1:$port" 2>"$TMP/err-send"
  wait "$tap_pid"
  [ "$(grep -c '"k":"example"' "$TMP/slow")" -eq 3 ]
  refute_sanitizer "$TMP"/err*
}
