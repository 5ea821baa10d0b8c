#!/usr/bin/env bats
# The stage contract of docs/protocol.md, shown with the debug stages: lossless relay over
# every transport and start order, refusal of broken streams, fan-in, backpressure.
load test_helper

write_stream() {
  cat >"$TMP/x.jsonl" <<'JSON'
{"v":1,"k":"hello","from":"test","task":"classification","labels":["negative","positive"]}
{"v":1,"k":"example","seq":0,"example_id":"s-0","text":"A café, naïve \"quotes\"\tand a tab","label":1}
{"v":1,"k":"example","seq":1,"example_id":"s-1","text":"日本語 and emoji 🙂","label":0}
{"v":1,"k":"feature","seq":2,"example_id":"s-0","window":0,"input_ids":{"dtype":"i32","shape":[3],"data":{"$bin":"ZQAAAGYAAABnAAAA"}},"score":0.1,"delta":-3,"big":1.5e+300,"ok":true,"none":null}
{"v":1,"k":"metric","seq":3,"step":10,"loss":0.6931471805599453,"lr":5e-05}
{"v":1,"k":"eos","from":"test","count":4}
JSON
}

@test "json2frames | tap | frames2json reproduces the JSON lines byte for byte" {
  write_stream
  json2frames <"$TMP/x.jsonl" | tap --log "$TMP/tap.log" | frames2json >"$TMP/y.jsonl" 2>"$TMP/err"
  cmp "$TMP/x.jsonl" "$TMP/y.jsonl"
  cmp "$TMP/x.jsonl" "$TMP/tap.log"
  refute_sanitizer "$TMP/err"
}

relay() { # in_endpoint out_endpoint consumer_first
  write_stream
  if [ "$3" = consumer_first ]; then
    frames2json --in "$2" >"$TMP/y.jsonl" 2>"$TMP/c.err" & c=$!
    tap --in "$1" --out "$2" 2>"$TMP/t.err" & t=$!
    sleep 0.2
    json2frames --out "$1" <"$TMP/x.jsonl" 2>"$TMP/p.err"
  else
    json2frames --out "$1" <"$TMP/x.jsonl" 2>"$TMP/p.err" & p=$!
    sleep 0.2
    tap --in "$1" --out "$2" 2>"$TMP/t.err" & t=$!
    sleep 0.2
    frames2json --in "$2" >"$TMP/y.jsonl" 2>"$TMP/c.err" & c=$!
    wait $p
  fi
  wait $t
  wait $c
  cmp "$TMP/x.jsonl" "$TMP/y.jsonl"
  refute_sanitizer "$TMP"/*.err
}

@test "relay over ipc, consumer started first" { relay "ipc://$TMP/a" "ipc://$TMP/b" consumer_first; }
@test "relay over ipc, producer started first" { relay "ipc://$TMP/a" "ipc://$TMP/b" producer_first; }
@test "relay over tcp, consumer started first" {
  relay "tcp://127.0.0.1:$(free_port)" "tcp://127.0.0.1:$(free_port)" consumer_first
}
@test "relay over tcp, producer started first" {
  relay "tcp://127.0.0.1:$(free_port)" "tcp://127.0.0.1:$(free_port)" producer_first
}
@test "explicit bind and connect: producer binds, consumer connects" {
  write_stream
  json2frames --out "@ipc://$TMP/s" <"$TMP/x.jsonl" & p=$!
  frames2json --in ">ipc://$TMP/s" >"$TMP/y.jsonl"
  wait $p
  cmp "$TMP/x.jsonl" "$TMP/y.jsonl"
}

@test "a consumer whose producer is killed mid-stream fails naming the missing eos (ipc)" {
  write_stream
  frames2json --in "ipc://$TMP/k" >/dev/null 2>"$TMP/err" & c=$!
  { head -3 "$TMP/x.jsonl"; sleep 5; } | json2frames --out "ipc://$TMP/k" &
  sleep 1
  pkill -9 -f "json2frames --out ipc://$TMP/k"
  status=0
  wait $c || status=$?
  [ "$status" -eq 1 ]
  grep -q "disconnected before its eos" "$TMP/err"
  grep -q "0 of 1 eos" "$TMP/err"
  assert_one_error_line "$TMP/err" frames2json
}

@test "a consumer whose producer is killed mid-stream fails naming the missing eos (stdio)" {
  write_stream
  run bash -c "head -3 '$TMP/x.jsonl' | json2frames | frames2json 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  grep -q "stream ended without eos" "$TMP/err"
  assert_one_error_line "$TMP/err" frames2json
}

@test "a stream whose eos count is wrong is refused" {
  write_stream
  sed 's/"count":4/"count":5/' "$TMP/x.jsonl" >"$TMP/bad.jsonl"
  run bash -c "json2frames <'$TMP/bad.jsonl' | tap --log /dev/null | frames2json 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  grep -q "eos count mismatch: eos says 5 data frames, 4 arrived" "$TMP/err"
  assert_one_error_line "$TMP/err" frames2json
  # json2frames --recount repairs an edited recording
  json2frames --recount <"$TMP/bad.jsonl" | frames2json >/dev/null
}

refused() { # printf-bytes expected-message
  printf "$1" >"$TMP/in.bin"
  run bash -c "frames2json <'$TMP/in.bin' >/dev/null 2>'$TMP/err'"
  [ "$status" -eq 1 ]
  grep -q "$2" "$TMP/err"
  assert_one_error_line "$TMP/err" frames2json
  refute_sanitizer "$TMP/err"
}

@test "malformed MessagePack is refused" { refused '\xc1\x00' 'malformed MessagePack'; }
@test "a frame that is not a map is refused" { refused '\x92\x01\x02' 'frame is not a map'; }
@test "a frame without k is refused" { refused '\x81\xa1v\x01' "frame has no 'k'"; }
@test "an unknown major version is refused" {
  refused '\x82\xa1v\x02\xa1k\xa5hello' 'unsupported protocol version 2 (this build speaks 1)'
}
@test "a frame cut short is refused" { refused '\x82\xa1v\x01\xa1k\xa5hel' 'stream ends inside a frame'; }
@test "data before any hello is refused" {
  refused '\x83\xa1v\x01\xa1k\xa7example\xa3seq\x00' 'example frame before any hello'
}
@test "json2frames names the line of bad JSON" {
  printf '{"v":1,"k":"hello","from":"t"}\n{"v":1,"k":\n' >"$TMP/bad.jsonl"
  run bash -c "json2frames '$TMP/bad.jsonl' 2>'$TMP/err' | frames2json >/dev/null 2>&1"
  grep -q "bad.jsonl line 2" "$TMP/err"
}

@test "fan-in: 3 producers into 1 consumer, every frame exactly once, ends only after 3 eos" {
  framesink --in "ipc://$TMP/f" --producers 3 >"$TMP/sink.out" 2>"$TMP/sink.err" & c=$!
  framegen --prefix a --count 500 --out "ipc://$TMP/f" & a=$!
  framegen --prefix b --count 500 --out "ipc://$TMP/f" & b=$!
  sleep 1
  # two of three streams are complete: the consumer must still be waiting for the third
  kill -0 $c
  framegen --prefix c --count 500 --out "ipc://$TMP/f"
  wait $c
  # producers exit 0 only once their consumer has read everything and hung up
  wait $a
  wait $b
  grep -q "^frames 1500 .* unique 1500$" "$TMP/sink.out"
}

@test "fan-out: one producer to 2 consumers, each stream complete with its own eos" {
  framesink --in "ipc://$TMP/o1" >"$TMP/s1" & c1=$!
  framesink --in "ipc://$TMP/o2" >"$TMP/s2" & c2=$!
  framegen --prefix z --count 400 --out "ipc://$TMP/o1,ipc://$TMP/o2"
  wait $c1
  wait $c2
  n1=$(awk '{print $2}' "$TMP/s1"); n2=$(awk '{print $2}' "$TMP/s2")
  [ $((n1 + n2)) -eq 400 ]
}

@test "backpressure: with a slow consumer the producer blocks, and sent = received" {
  export BERTPIPE_HWM=2
  framesink --in "ipc://$TMP/bp2" >"$TMP/sink.out" & c=$!
  tap --delay-ms 10 --log /dev/null --in "ipc://$TMP/bp1" --out "ipc://$TMP/bp2" & t=$!
  framegen --count 300 --bytes 65536 --out "ipc://$TMP/bp1" & p=$!
  sleep 1.5
  # 300 frames take 3 s through the slow tap; an unblocked producer would be done by now
  kill -0 $p
  wait $p
  wait $t
  wait $c
  grep -q "^frames 300 .* unique 300$" "$TMP/sink.out"
}

@test "stages report their counts in and out on stderr" {
  write_stream
  unset BERTPIPE_QUIET
  json2frames <"$TMP/x.jsonl" | tap --log /dev/null 2>"$TMP/err" >/dev/null
  grep -q "^tap: in: 4 frames (2 example, 1 feature, 1 metric) from -$" "$TMP/err"
  grep -q "^tap: out: 4 frames" "$TMP/err"
}
