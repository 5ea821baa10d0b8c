#!/usr/bin/env bats
# The shape of stages/ (docs: STYLE "a stage's main reads like its man page"; the wire layer
# is the only code that knows MessagePack): checked on the source, so a regression fails here.
load test_helper

@test "no function in stages/ is longer than 100 lines" {
  run "$BERTPIPE_TOP/scripts/function-lengths" --max 100 "$BERTPIPE_TOP/stages"
  [ "$status" -eq 0 ]
  [ -z "$output" ]
}

@test "no stage knows MessagePack: frames go through wire/frame.h only" {
  run grep -rlE 'msgpack|MSGPACK' "$BERTPIPE_TOP/stages"
  [ "$status" -eq 1 ]
  [ -z "$output" ]
}

@test "only wire/ includes the codec's MessagePack header" {
  run bash -c "grep -rlE '#include [<\"](msgpack\.h|wire/codec\.h)' '$BERTPIPE_TOP/common' '$BERTPIPE_TOP/stages' | grep -v '/common/wire/'"
  [ "$status" -eq 1 ]
  [ -z "$output" ]
}
