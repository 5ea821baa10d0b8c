#!/usr/bin/env bats
# Frame fields: one reader per shared field, one rule for a bad value, the same error from
# every stage that reads it (common/wire/frame.h). A field of the wrong type is refused
# naming the frame and the field, never taken as absent; an integer outside its field's
# range is refused, never truncated. And once a stage's output is open, any fatal error
# reaches downstream as an error frame (common/stage/stage.h).
load test_helper

VOCAB="$BERTPIPE_TOP/pipelines/default/vocab.txt"

# A stream of JSON lines: hello (its fields given), then each frame given, then eos.
stream() { # HELLO_FIELDS FRAME...
  local hello=$1 n=0; shift
  printf '{"v":1,"k":"hello","from":"test"%s}\n' "$hello"
  for frame in "$@"; do printf '%s\n' "$frame"; n=$((n + 1)); done
  printf '{"v":1,"k":"eos","from":"test","count":%d}\n' "$n"
}

# A QA example whose answers field is given.
qa_example() { # ANSWERS
  printf '{"v":1,"k":"example","seq":0,"example_id":"q1","split":"validation","title":"t","question":"where?","context":"in Porto","answers":%s,"is_impossible":false}' "$1"
}

# The error text of a stage's one error line, without "STAGE: error: " and "(WHERE)".
error_text() { sed -E 's/^[a-z0-9]+: error: //; s/ \([^()]*\)$//' "$1"; }

@test "tokenize refuses an answers entry without a string text, naming frame, field and entry" {
  stream ',"task":"qa"' "$(qa_example '[{"text":"Porto","answer_start":3},{"answer_start":3}]')" >"$TMP/ex.jsonl"
  run bash -c "json2frames '$TMP/ex.jsonl' | tokenize --vocab '$VOCAB' 2>&1 >/dev/null"
  [ "$status" -eq 1 ]
  [ "$output" = "tokenize: error: field 'answers'[1] has no string 'text' (example frame 0)" ]
}

@test "postprocess refuses the same bad answers entry with the same error as tokenize" {
  stream ',"task":"qa"' "$(qa_example '[{"text":"Porto","answer_start":3},{"answer_start":3}]')" >"$TMP/ex.jsonl"
  json2frames --out "file:$TMP/ex.frames" "$TMP/ex.jsonl"
  run bash -c "json2frames '$TMP/ex.jsonl' | tokenize --vocab '$VOCAB' 2>'$TMP/tok.err' >/dev/null"
  [ "$status" -eq 1 ]
  stream ',"task":"qa"' >"$TMP/logits.jsonl"
  run bash -c "json2frames '$TMP/logits.jsonl' | postprocess --examples 'file:$TMP/ex.frames' 2>'$TMP/pp.err' >/dev/null"
  [ "$status" -eq 1 ]
  assert_one_error_line "$TMP/pp.err" postprocess
  [ "$(error_text "$TMP/pp.err")" = "$(error_text "$TMP/tok.err")" ]
  [ "$(error_text "$TMP/pp.err")" = "field 'answers'[1] has no string 'text'" ]
}

@test "an answer_start that is a string is refused, not read as no answer" {
  stream ',"task":"qa"' "$(qa_example '[{"text":"Porto","answer_start":"3"}]')" >"$TMP/ex.jsonl"
  run bash -c "json2frames '$TMP/ex.jsonl' | tokenize --vocab '$VOCAB' 2>&1 >/dev/null"
  [ "$status" -eq 1 ]
  [ "$output" = "tokenize: error: field 'answers'[0] has no integer 'answer_start' (example frame 0)" ]
}

@test "answers that are not an array are refused" {
  stream ',"task":"qa"' "$(qa_example '{"text":"Porto","answer_start":3}')" >"$TMP/ex.jsonl"
  run bash -c "json2frames '$TMP/ex.jsonl' | tokenize --vocab '$VOCAB' 2>&1 >/dev/null"
  [ "$status" -eq 1 ]
  [ "$output" = "tokenize: error: field 'answers' is not an array (example frame 0)" ]
}

@test "a label of 1.0 is refused as not an integer, not taken as no label" {
  stream '' '{"v":1,"k":"example","seq":0,"example_id":"a","split":"train","text":"fine","label":1.0}' >"$TMP/ex.jsonl"
  run bash -c "json2frames '$TMP/ex.jsonl' | tokenize --vocab '$VOCAB' 2>&1 >/dev/null"
  [ "$status" -eq 1 ]
  [ "$output" = "tokenize: error: field 'label' is not an integer (example frame 0)" ]
}

@test "a label of \"1\" is refused as not an integer" {
  stream '' '{"v":1,"k":"example","seq":0,"example_id":"a","split":"train","text":"fine","label":"1"}' >"$TMP/ex.jsonl"
  run bash -c "json2frames '$TMP/ex.jsonl' | tokenize --vocab '$VOCAB' 2>&1 >/dev/null"
  [ "$status" -eq 1 ]
  [ "$output" = "tokenize: error: field 'label' is not an integer (example frame 0)" ]
}

@test "an example without a label still makes an unlabelled feature" {
  stream '' '{"v":1,"k":"example","seq":0,"example_id":"a","split":"test","text":"fine"}' >"$TMP/ex.jsonl"
  run bash -c "json2frames '$TMP/ex.jsonl' | tokenize --vocab '$VOCAB' 2>/dev/null | frames2json 2>/dev/null | grep '\"k\":\"feature\"'"
  [ "$status" -eq 0 ]
  [[ "$output" == *'"example_id":"a"'* ]]
  [[ "$output" != *'"label"'* ]]
}

@test "batch refuses a label past int32 instead of reading 2^32+1 as 1" {
  stream ',"max_length":8' \
    '{"v":1,"k":"feature","seq":0,"example_id":"a","window":0,"input_ids":{"dtype":"i32","shape":[1],"data":{"$bin":"ZQAAAA=="}},"token_type_ids":{"dtype":"i32","shape":[1],"data":{"$bin":"AAAAAA=="}},"attention_mask":{"dtype":"i32","shape":[1],"data":{"$bin":"AQAAAA=="}},"label":4294967297}' \
    >"$TMP/f.jsonl"
  run bash -c "json2frames '$TMP/f.jsonl' | batch 2>&1 >/dev/null"
  [ "$status" -eq 1 ]
  [ "$output" = "batch: error: field 'label' is 4294967297, outside [-2147483648, 2147483647] (feature frame 0)" ]
}

@test "score refuses a gold label past int32" {
  stream ',"task":"classification"' \
    '{"v":1,"k":"prediction","seq":0,"example_id":"a","label":1,"probs":{"dtype":"f32","shape":[2],"data":{"$bin":"AAAAPwAAAD8="}},"gold":4294967297}' \
    >"$TMP/p.jsonl"
  run bash -c "json2frames '$TMP/p.jsonl' | score 2>&1 >/dev/null"
  [ "$status" -eq 1 ]
  [ "$output" = "score: error: field 'gold' is 4294967297, outside [-2147483648, 2147483647] (prediction frame 0)" ]
}

@test "a hello label that is not a string is refused naming its index" {
  stream ',"task":"classification","labels":["neg",1]' >"$TMP/p.jsonl"
  run bash -c "json2frames '$TMP/p.jsonl' | score 2>&1 >/dev/null"
  [ "$status" -eq 1 ]
  [ "$output" = "score: error: field 'labels'[1] is not a string (hello frame 0)" ]
}

@test "a hello pad_id of the wrong type is refused, not replaced by the default" {
  stream ',"pad_id":"0"' >"$TMP/f.jsonl"
  run bash -c "json2frames '$TMP/f.jsonl' | batch 2>&1 >/dev/null"
  [ "$status" -eq 1 ]
  [ "$output" = "batch: error: field 'pad_id' is not an integer (hello frame 0)" ]
}

@test "a stage that fails after opening its output tells downstream in an error frame" {
  # tap cannot write its log: the consumer must learn why, not see a stream cut short
  stream '' '{"v":1,"k":"metric","seq":0,"scope":"train"}' >"$TMP/m.jsonl"
  run bash -c "json2frames '$TMP/m.jsonl' | tap --log /dev/full 2>/dev/null | frames2json 2>&1 >/dev/null"
  [ "$status" -eq 3 ]   # the failure was upstream's (proto/frames.md, exit statuses)
  [ "$output" = "frames2json: error: upstream stage tap failed: cannot write the log (/dev/full) (-)" ]
}
