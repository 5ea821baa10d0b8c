#!/usr/bin/env bats
# The stages against the protocol test vectors (proto/vectors, made by
# tests/reference/make_vectors.py): frames2json prints each vector's bytes as its JSON line,
# json2frames turns the line back into the same bytes, and bad frames are refused by the
# stages with the vector's expected text.
load test_helper

V="$BERTPIPE_TOP/proto/vectors"

# eos {"v":1,"k":"eos","from":"t","count":N} for N < 128
eos_bytes() { printf '\x84\xa1v\x01\xa1k\xa3eos\xa4from\xa1t\xa5count'; printf "\\x$(printf %02x "$1")"; }

@test "frames2json prints every data vector as its JSON line" {
  n=0
  for j in "$V"/*.json; do
    name=$(basename "$j" .json)
    case $name in hello*|eos|error) continue ;; esac
    { cat "$V/hello-minimal.msgpack" "$V/$name.msgpack"; eos_bytes 1; } >"$TMP/in.bin"
    frames2json <"$TMP/in.bin" >"$TMP/out.jsonl" 2>"$TMP/err"
    sed -n 2p "$TMP/out.jsonl" | cmp - "$j"
    n=$((n + 1))
  done
  [ "$n" -ge 10 ]
}

@test "json2frames turns each vector's JSON line into the vector's bytes" {
  for j in "$V"/*.json; do
    name=$(basename "$j" .json)
    case $name in hello*|eos|error) continue ;; esac
    { cat "$V/hello-minimal.json" "$j"; printf '{"v":1,"k":"eos","from":"t","count":1}\n'; } >"$TMP/in.jsonl"
    json2frames --out "file:$TMP/out.bin" "$TMP/in.jsonl"
    hsize=$(stat -c %s "$V/hello-minimal.msgpack"); vsize=$(stat -c %s "$V/$name.msgpack")
    tail -c +$((hsize + 1)) "$TMP/out.bin" | head -c "$vsize" | cmp - "$V/$name.msgpack"
  done
}

@test "hello and eos vectors make a valid empty stream" {
  { cat "$V/hello.msgpack"; eos_bytes 0; } | frames2json >"$TMP/out.jsonl"
  head -1 "$TMP/out.jsonl" | cmp - "$V/hello.json"
}

@test "an error vector makes frames2json fail naming the upstream stage" {
  run bash -c "cat '$V/hello-minimal.msgpack' '$V/error.msgpack' | frames2json 2>'$TMP/err' >/dev/null"
  [ "$status" -eq 3 ]
  grep -q "upstream stage train failed: tensor 'input_ids' has dtype f32, expected i32" "$TMP/err"
}

@test "bad vectors are refused by a stage with their expected text" {
  for e in "$V"/bad-*.expect; do
    name=$(basename "$e" .expect)
    # on a byte stream, a cut-short or over-long frame shows up as the next frame's problem
    case $name in bad-truncated|bad-trailing) continue ;; esac
    run bash -c "frames2json <'$V/$name.msgpack' >/dev/null 2>'$TMP/err'"
    [ "$status" -eq 1 ]
    grep -qF "$(cat "$e")" "$TMP/err"
    assert_one_error_line "$TMP/err" frames2json
  done
}

@test "a tap on a fan-in merges the streams: one hello, one eos with the total, nothing lost" {
  ( framegen --count 3 --prefix a; framegen --count 3 --prefix b ) \
    | tap --producers 2 --log /dev/null | framesink >"$TMP/sink.out"
  grep -q "^frames 6 .* unique 6$" "$TMP/sink.out"
  ( framegen --count 3 --prefix a; framegen --count 3 --prefix b ) \
    | tap --producers 2 --log /dev/null | frames2json >"$TMP/s.jsonl"
  [ "$(grep -c '"k":"hello"' "$TMP/s.jsonl")" -eq 1 ]
  [ "$(grep -c '"k":"eos"' "$TMP/s.jsonl")" -eq 1 ]
  grep -q '"k":"eos","from":"tap","count":6' "$TMP/s.jsonl"
}

@test "over ipc, a tap on a fan-in ends its consumer only after every producer" {
  framesink --in "ipc://$TMP/t2" >"$TMP/sink.out" & c=$!
  tap --log /dev/null --producers 2 --in "ipc://$TMP/t1" --out "ipc://$TMP/t2" & t=$!
  framegen --prefix a --count 5 --out "ipc://$TMP/t1" & a=$!
  framegen --prefix b --count 5 --out "ipc://$TMP/t1" & b=$!
  wait $c
  wait $t
  grep -q "^frames 10 .* unique 10$" "$TMP/sink.out"
}

@test "json2frames refuses a \$u64 that is not a decimal above int64" {
  for bad in '"12"' '"-5"' '"1e30"' '99' '"99999999999999999999"'; do
    printf '{"v":1,"k":"hello","from":"t"}\n{"v":1,"k":"metric","seq":0,"n":{"$u64":%s}}\n' "$bad" >"$TMP/in.jsonl"
    run json2frames --out "file:$TMP/out.bin" "$TMP/in.jsonl"
    [ "$status" -ne 0 ]
    [[ "$output" == *'$u64 must be a decimal string above 9223372036854775807 ('*'line 2)'* ]]
  done
}
