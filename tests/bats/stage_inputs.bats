#!/usr/bin/env bats
# Input a stage must refuse by name instead of crashing on or getting silently wrong: logits
# with no class or more rows than ids, a hello length past int32, example ids twice or
# missing, labels the stream does not name, an empty question, a task that is no task.
load test_helper

hello_cls='{"v":1,"k":"hello","from":"t","task":"classification"'
eos() { printf '{"v":1,"k":"eos","from":"t","count":%d}\n' "$1"; }
# a logits frame: ids (JSON array), shape (JSON), base64 data, more fields
logits() { printf '{"v":1,"k":"logits","seq":%d,"example_ids":%s,"logits":{"dtype":"f32","shape":%s,"data":{"$bin":"%s"}}%s}\n' "$@"; }

# Run a stage on JSON lines: $status, its stderr in $TMP/err; no sanitizer report allowed.
stage_on() { # jsonl-file stage args...
  local in=$1; shift
  run bash -c "json2frames '$in' 2>/dev/null | timeout 60 $* >/dev/null 2>'$TMP/err'"
  refute_sanitizer "$TMP/err"
}

@test "postprocess refuses logits with no class, with or without labels, instead of reading NULL rows" {
  two=',"windows":{"dtype":"i32","shape":[2],"data":{"$bin":"AAAAAAAAAAA="}}'
  gold=',"labels":{"dtype":"i32","shape":[2],"data":{"$bin":"AAAAAAEAAAA="}}'
  { echo "$hello_cls,\"labels\":[]}"; logits 0 '["a","b"]' '[2,0]' '' "$two$gold"; eos 1; } >"$TMP/gold.jsonl"
  stage_on "$TMP/gold.jsonl" postprocess
  [ "$status" -eq 1 ]
  assert_one_error_line "$TMP/err" postprocess
  grep -q "tensor 'logits' has 0 classes (shape\[1\]); at least 1 is needed (logits frame 0)" "$TMP/err"
  { echo "$hello_cls}"; logits 0 '["a","b"]' '[2,0]' '' "$two"; eos 1; } >"$TMP/nogold.jsonl"
  stage_on "$TMP/nogold.jsonl" postprocess
  [ "$status" -eq 1 ]
  grep -q "has 0 classes" "$TMP/err"
}

@test "postprocess refuses logits with 2^32+1 rows and one example id" {
  { echo "$hello_cls}"; logits 0 '["a"]' '[4294967297,0]' '' ''; eos 1; } >"$TMP/l.jsonl"
  stage_on "$TMP/l.jsonl" postprocess
  [ "$status" -eq 1 ]
  assert_one_error_line "$TMP/err" postprocess
  grep -q "'example_ids' has 1 entries for 4294967297 rows of 'logits' (logits frame 0)" "$TMP/err"
}

@test "batch --pad max refuses a hello max_length past int32 instead of sizing rows by it" {
  { echo "$hello_cls,\"max_length\":2147483648}"; eos 0; } >"$TMP/h.jsonl"
  stage_on "$TMP/h.jsonl" batch --pad max
  [ "$status" -eq 1 ]
  assert_one_error_line "$TMP/err" batch
  grep -q "field 'max_length' is 2147483648, outside \[1, 1048576\]" "$TMP/err"
}

@test "postprocess refuses an example predicted twice (an evaluation over two epochs), naming it" {
  # 2 epochs of 3 examples evaluated: each example comes twice
  batches validation 3 3 2 --no-shuffle --out "file:$TMP/b.batches"
  train --in "file:$TMP/b.batches" --preset tiny --vocab "$VOCAB" --max-steps 1 --save "$TMP/m" >/dev/null 2>&1
  run bash -c "'$BERTPIPE_BIN/eval' --checkpoint '$TMP/m' --in 'file:$TMP/b.batches' 2>/dev/null | postprocess 2>'$TMP/err' >/dev/null"
  [ "$status" -eq 1 ]
  refute_sanitizer "$TMP/err"
  assert_one_error_line "$TMP/err" postprocess
  grep -q "row 0: example validation-0 window 0 has logits twice .* (logits frame 1)" "$TMP/err"
}

prediction() { printf '{"v":1,"k":"prediction","seq":%d%s,"label":1,"gold":1}\n' "$1" "$2"; }

@test "score counts every example once: an id twice, a missing id or one that is not a string is refused" {
  { echo "$hello_cls}"; prediction 0 ',"example_id":"a"'; prediction 1 ',"example_id":"b"'; prediction 2 ',"example_id":"a"'; eos 3; } >"$TMP/twice.jsonl"
  stage_on "$TMP/twice.jsonl" score
  [ "$status" -eq 1 ]
  assert_one_error_line "$TMP/err" score
  grep -q "example a is predicted twice (prediction frame 2)" "$TMP/err"
  { echo "$hello_cls}"; prediction 0 ''; eos 1; } >"$TMP/none.jsonl"
  stage_on "$TMP/none.jsonl" score
  [ "$status" -eq 1 ]
  grep -q "no field 'example_id' (prediction frame 0)" "$TMP/err"
  { echo "$hello_cls}"; prediction 0 ',"example_id":7'; eos 1; } >"$TMP/int.jsonl"
  stage_on "$TMP/int.jsonl" score
  [ "$status" -eq 1 ]
  grep -q "field 'example_id' is not a string (prediction frame 0)" "$TMP/err"
}

@test "tokenize refuses a label outside the classes the hello names, naming the example" {
  { echo "$hello_cls,\"labels\":[\"negative\",\"positive\"],\"num_labels\":2}"
    echo '{"v":1,"k":"example","seq":0,"example_id":"ok-0","text":"fine","label":1}'
    echo '{"v":1,"k":"example","seq":1,"example_id":"bad-1","text":"what","label":2}'; eos 2; } >"$TMP/x.jsonl"
  stage_on "$TMP/x.jsonl" tokenize --vocab "$VOCAB"
  [ "$status" -eq 1 ]
  assert_one_error_line "$TMP/err" tokenize
  grep -q "example bad-1: label 2 is outside the 2 classes the stream.s hello names (example frame 1)" "$TMP/err"
}

@test "extract refuses an empty --question or --context" {
  run extract --question "" --context "Ilse moved to Porto."
  [ "$status" -eq 2 ]
  [[ "$output" == "extract: error: --question is empty: there is nothing to answer"* ]]
  run extract --question "Where?" --context "   "
  [ "$status" -eq 2 ]
  [[ "$output" == "extract: error: --context is empty"* ]]
}

@test "a hello whose task is not a string or not a task is refused, not read as classification" {
  { echo '{"v":1,"k":"hello","from":"t","task":7}'; eos 0; } >"$TMP/t.jsonl"
  stage_on "$TMP/t.jsonl" tokenize --vocab "$VOCAB"
  [ "$status" -eq 1 ]
  assert_one_error_line "$TMP/err" tokenize
  grep -q "field 'task' is not a string (hello frame 0)" "$TMP/err"
  { echo '{"v":1,"k":"hello","from":"t","task":"ner"}'; eos 0; } >"$TMP/t.jsonl"
  stage_on "$TMP/t.jsonl" postprocess
  [ "$status" -eq 1 ]
  grep -q "field 'task' is 'ner', expected classification or qa (hello frame 0)" "$TMP/err"
}
