#!/usr/bin/env bats
# Faults of the stream and its transport (proto/frames.md, sections 1 and 4-5), each bounded by
# `timeout` so that a hang fails the test instead of stalling the suite: frames whose headers
# lie about their size, keys given twice, eos counts that overflow, a fan-in producer killed
# after the other finished, a stray connection to a consumer's port, a consumer that dies, and
# the exit statuses that say whose failure it was (3 upstream, 4 downstream, 128+N a signal).
load test_helper

V="$BERTPIPE_TOP/proto/vectors"

@test "over ipc, a frame whose array header claims 4 billion elements is refused, not allocated" {
  frames2json --in "ipc://$TMP/in" >/dev/null 2>"$TMP/err" & c=$!
  timeout 20 zmqraw --out "ipc://$TMP/in" "$V/hello-minimal.msgpack" "$V/bad-huge-array.msgpack"
  status=0
  timeout 20 tail --pid=$c -f /dev/null || status=$?
  wait $c || status=$?
  [ "$status" -eq 1 ]
  refute_sanitizer "$TMP/err"
  assert_one_error_line "$TMP/err" frames2json
  grep -qF "array at byte 16 announces 4294967295 elements, more than the frame can hold" "$TMP/err"
}

@test "json2frames refuses a key given twice, naming the line, so a replay never changes a frame" {
  printf '{"v":1,"k":"hello","from":"t"}\n{"v":1,"k":"example","seq":0,"example_id":"a","label":0,"label":1}\n' >"$TMP/dup.jsonl"
  run bash -c "json2frames '$TMP/dup.jsonl' 2>'$TMP/err' | frames2json >/dev/null 2>&1"
  assert_one_error_line "$TMP/err" json2frames
  grep -q "duplicate object key.*(.*dup.jsonl line 2)" "$TMP/err"
}

@test "eos counts that add up past 2^63 are refused, not wrapped round to the frames that came" {
  hello='{"v":1,"k":"hello","from":"t"}'
  big='{"v":1,"k":"eos","from":"t","count":9223372036854775807}'
  { echo "$hello"; echo "$hello"; echo "$hello"
    echo '{"v":1,"k":"feature","seq":0,"example_id":"x","window":0}'
    echo "$big"; echo "$big"; echo '{"v":1,"k":"eos","from":"t","count":3}'; } >"$TMP/s.jsonl"
  run bash -c "json2frames '$TMP/s.jsonl' | timeout 20 frames2json --producers 3 >/dev/null 2>'$TMP/err'"
  [ "$status" -eq 1 ]
  refute_sanitizer "$TMP/err"
  assert_one_error_line "$TMP/err" frames2json
  grep -q "eos count mismatch: eos says 9223372036854775807 data frames, 1 arrived" "$TMP/err"
}

@test "fan-in: a producer killed after the other finished fails the consumer instead of hanging" {
  framesink --in "ipc://$TMP/f" --producers 2 >/dev/null 2>"$TMP/err" & c=$!
  framegen --prefix a --count 5 --out "ipc://$TMP/f" 2>/dev/null & a=$!
  mkfifo "$TMP/feed"
  json2frames --out "ipc://$TMP/f" <"$TMP/feed" 2>/dev/null & b=$!
  exec 8>"$TMP/feed"
  printf '{"v":1,"k":"hello","from":"b"}\n{"v":1,"k":"feature","seq":0,"example_id":"b-0"}\n' >&8
  sleep 1.5   # a's stream is complete and b has said hello: the consumer waits for b's eos
  kill -9 $b
  status=0
  timeout 20 tail --pid=$c -f /dev/null || status=124
  exec 8>&-
  [ "$status" -eq 0 ]   # the consumer ended on its own
  wait $c || status=$?
  [ "$status" -eq 1 ]
  assert_one_error_line "$TMP/err" framesink
  grep -q "a producer disconnected before its eos: 1 of 2 eos received after 6 frames; 1 eos missing" "$TMP/err"
  wait $a   # the finished producer is released when its consumer hangs up
}

stray_then_stream() { # endpoint
  frames2json --in "$1" >"$TMP/out.jsonl" 2>"$TMP/err" & c=$!
  sleep 0.5
  zmqraw --stray "$1"
  zmqraw --stray "$1"
  sleep 1   # past the grace a lost producer would get
  kill -0 $c   # the consumer is still there, waiting for a producer
  printf '{"v":1,"k":"hello","from":"t"}\n{"v":1,"k":"metric","seq":0,"scope":"train"}\n{"v":1,"k":"eos","from":"t","count":1}\n' |
    timeout 20 json2frames --out "$1"
  timeout 20 tail --pid=$c -f /dev/null
  wait $c
  [ "$(grep -c '"k":' "$TMP/out.jsonl")" -eq 3 ]
  refute_sanitizer "$TMP/err"
}

@test "a connect-and-close on a tcp input is not a producer: the consumer waits for the real one" {
  stray_then_stream "tcp://127.0.0.1:$(free_port)"
}

@test "a connect-and-close on an ipc input is not a producer either" {
  stray_then_stream "ipc://$TMP/stray"
}

@test "a producer whose consumer was killed exits 4 (downstream went away) instead of waiting" {
  # a consumer slowed down by a tap, so the producer is still sending when it is killed
  tap --delay-ms 5 --log /dev/null --in "ipc://$TMP/d" --out "ipc://$TMP/d2" 2>/dev/null & c=$!
  framesink --in "ipc://$TMP/d2" >/dev/null 2>&1 & s=$!
  BERTPIPE_HWM=4 framegen --count 100000 --bytes 4096 --out "ipc://$TMP/d" 2>"$TMP/err" & p=$!
  sleep 1.5
  kill -9 $c
  status=0
  timeout 20 tail --pid=$p -f /dev/null || status=124
  [ "$status" -eq 0 ]
  wait $p || status=$?
  [ "$status" -eq 4 ]
  assert_one_error_line "$TMP/err" framegen
  grep -q "the consumer disconnected before the end of the stream" "$TMP/err"
}

@test "a producer writing to a closed pipe exits 4" {
  run bash -c "framegen --count 100000 --bytes 4096 2>'$TMP/err' | head -c 1000 >/dev/null; exit \${PIPESTATUS[0]}"
  [ "$status" -eq 4 ]
  assert_one_error_line "$TMP/err" framegen
  grep -q "downstream closed the pipe after" "$TMP/err"
}

@test "a stage that receives an upstream error frame exits 3 and passes the error on" {
  printf '{"v":1,"k":"hello","from":"t","task":"classification"}\n{"v":1,"k":"error","from":"extract","message":"bad record (x.tsv line 3)"}\n' >"$TMP/e.jsonl"
  run bash -c "json2frames '$TMP/e.jsonl' | tokenize --vocab '$BERTPIPE_TOP/pipelines/default/vocab.txt' 2>'$TMP/err' |
    frames2json >/dev/null 2>'$TMP/down'; echo \${PIPESTATUS[*]} >'$TMP/rc'"
  read -r _ tok_rc down_rc <"$TMP/rc"
  [ "$tok_rc" -eq 3 ] && [ "$down_rc" -eq 3 ]
  grep -q "tokenize: error: upstream stage extract failed: bad record (x.tsv line 3) (-)" "$TMP/err"
  grep -q "frames2json: error: upstream stage tokenize failed: upstream stage extract failed" "$TMP/down"
}

@test "an error frame before any hello is the upstream's failure, passed on and named" {
  printf '{"v":1,"k":"error","from":"batch","message":"cannot read (f.bin)"}\n' >"$TMP/e.jsonl"
  run bash -c "json2frames '$TMP/e.jsonl' | timeout 20 frames2json >/dev/null 2>'$TMP/err'"
  [ "$status" -eq 3 ]
  grep -q "upstream stage batch failed: cannot read (f.bin) (-)" "$TMP/err"
}

@test "BERTPIPE_TIMEOUT bounds a producer blocked at the high-water mark of a consumer that never reads" {
  # a consumer that takes the connection but never reads: tap stopped by SIGSTOP
  tap --in "ipc://$TMP/slow" --out "ipc://$TMP/never" --log /dev/null 2>/dev/null & t=$!
  sleep 0.5
  kill -STOP $t
  run env BERTPIPE_HWM=2 BERTPIPE_TIMEOUT=2 timeout 30 framegen --count 100000 --bytes 65536 --out "ipc://$TMP/slow"
  kill -CONT $t; kill -9 $t
  [ "$status" -eq 1 ]
  [[ "$output" == *"no consumer took a frame for 2 s (BERTPIPE_TIMEOUT)"* ]]
}
