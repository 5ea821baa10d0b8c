#!/usr/bin/env bats
# Every refusal of bad input is one line in the one format, WHERE included:
#   STAGE: error: WHAT (WHERE)
# WHERE names the file and record, the frame kind and index, the tensor's frame, the endpoint or
# the directory. A corpus of bad inputs goes through each stage; each must fail (not with a
# usage error's 2), print exactly one line matching ^STAGE: error: .+ \(.+\)$ and nothing from
# a sanitizer. (Usage errors say what the command line lacks instead: their WHERE is the
# command line.)
load test_helper

EVAL="$BERTPIPE_BIN/eval"
H='{"v":1,"k":"hello","from":"t"'
EOS='{"v":1,"k":"eos","from":"t","count":1}'
I32_1='{"dtype":"i32","shape":[1],"data":{"$bin":"AQAAAA=="}}'
I32_0='{"dtype":"i32","shape":[1],"data":{"$bin":"AAAAAA=="}}'
F32_12='{"dtype":"f32","shape":[1,2],"data":{"$bin":"AAAAAAAAAAA="}}'
cases=0

# The stage's one error line in $TMP/err, in the format, with a WHERE.
check_line() { # stage case-name
  cases=$((cases + 1))
  refute_sanitizer "$TMP/err"
  local n
  n=$(grep -c . "$TMP/err")
  if [ "$n" -ne 1 ] || ! grep -qE "^$1: error: .+ \(.+\)$" "$TMP/err"; then
    echo "case '$2': want one line '$1: error: WHAT (WHERE)', got:" >&2
    cat "$TMP/err" >&2
    return 1
  fi
}

# A stream (hello fields, then frames) into a stage.
frames_case() { # case-name hello-fields frames-text stage args...
  local name=$1 hello=$2 frames=$3 stage=$4
  shift 4
  { echo "$H$hello}"; [ -n "$frames" ] && printf '%s\n' "$frames"
    printf '{"v":1,"k":"eos","from":"t","count":%d}\n' "$(printf '%s' "$frames" | grep -c .)"; } >"$TMP/in.jsonl"
  run bash -c "json2frames '$TMP/in.jsonl' 2>/dev/null | timeout 60 $stage $* >/dev/null 2>'$TMP/err'"
  [ "$status" -ne 0 ] && [ "$status" -ne 2 ] || { echo "case '$name': status $status" >&2; cat "$TMP/err" >&2; return 1; }
  check_line "$(basename "${stage%% *}")" "$name"
}

# Raw bytes (printf escapes) into a stage's stdin.
bytes_case() { # case-name printf-bytes stage args...
  local name=$1 bytes=$2 stage=$3
  shift 3
  printf "$bytes" >"$TMP/in.bin"
  run bash -c "timeout 60 $stage $* <'$TMP/in.bin' >/dev/null 2>'$TMP/err'"
  [ "$status" -ne 0 ] && [ "$status" -ne 2 ] || { echo "case '$name': status $status" >&2; return 1; }
  check_line "$(basename "${stage%% *}")" "$name"
}

# A command that reads files.
file_case() { # case-name stage args...
  local name=$1 stage=$2
  shift 2
  run bash -c "timeout 60 $stage $* </dev/null >/dev/null 2>'$TMP/err'"
  [ "$status" -ne 0 ] && [ "$status" -ne 2 ] || { echo "case '$name': status $status" >&2; cat "$TMP/err" >&2; return 1; }
  check_line "$(basename "${stage%% *}")" "$name"
}

@test "every refusal of a bad stream or frame ends with its WHERE, in every stage" {
  tok="tokenize --vocab $VOCAB"
  cls=',"task":"classification","labels":["n","p"],"num_labels":2'
  # the stream itself, through the debug stages
  bytes_case "malformed MessagePack" '\xc1' frames2json
  bytes_case "frame cut short" '\x82\xa1v\x01\xa1k\xa5hel' frames2json
  bytes_case "a key twice" '\x83\xa1v\x01\xa1k\xa5hello\xa1k\xa3eos' tap --log /dev/null
  bytes_case "huge array" '\x83\xa1v\x01\xa1k\xa5hello\xa3ids\xdd\xff\xff\xff\xff' frames2json
  printf '%s}\n{"v":1,"k":"metric","seq":0,"scope":"x"}\n{"v":1,"k":"eos","from":"t","count":2}\n' "$H" >"$TMP/in.jsonl"
  run bash -c "json2frames '$TMP/in.jsonl' | frames2json >/dev/null 2>'$TMP/err'"
  check_line frames2json "eos count wrong"
  bytes_case "no eos" '\x83\xa1v\x01\xa1k\xa5hello\xa4from\xa1t' frames2json
  frames_case "upstream error" '' '{"v":1,"k":"error","from":"x","message":"bad"}' "$tok"
  printf '{"v":1,"k":"metric","seq":0,"scope":"x"}\n' >"$TMP/in.jsonl"
  run bash -c "json2frames '$TMP/in.jsonl' | frames2json >/dev/null 2>'$TMP/err'"
  check_line frames2json "data before the hello"
  # tokenize
  frames_case "example without text" "$cls" '{"v":1,"k":"example","seq":0,"example_id":"a"}' "$tok"
  frames_case "label a string" "$cls" '{"v":1,"k":"example","seq":0,"example_id":"a","text":"x","label":"1"}' "$tok"
  frames_case "label past the classes" "$cls" '{"v":1,"k":"example","seq":0,"example_id":"a","text":"x","label":7}' "$tok"
  frames_case "answers not an array" ',"task":"qa"' '{"v":1,"k":"example","seq":0,"example_id":"q","question":"q","context":"c","answers":3}' "$tok"
  frames_case "a feature for tokenize" "$cls" '{"v":1,"k":"feature","seq":0,"example_id":"a"}' "$tok"
  frames_case "task a number" ',"task":3' '' "$tok"
  # batch
  feature() { printf '{"v":1,"k":"feature","seq":0,"example_id":"a","window":0,"input_ids":%s,"token_type_ids":%s,"attention_mask":%s%s}' "$1" "$I32_0" "$I32_1" "$2"; }
  frames_case "feature without input_ids" "$cls" '{"v":1,"k":"feature","seq":0,"example_id":"a"}' batch
  frames_case "input_ids of floats" "$cls" "$(feature '{"dtype":"f32","shape":[1],"data":{"$bin":"AAAAAA=="}}' '')" batch
  frames_case "label past int32" "$cls" "$(feature "$I32_1" ',"label":4294967297')" batch
  frames_case "max_length past int32" ',"max_length":2147483648' '' batch --pad max
  frames_case "an example for batch" "$cls" '{"v":1,"k":"example","seq":0,"example_id":"a","text":"x"}' batch
  # train and eval: batches
  bh="$cls"',"batch_size":1,"max_length":4,"vocab_size":30,"batches_per_epoch":1'
  batch() { printf '{"v":1,"k":"batch","seq":0,"epoch":1,"example_ids":["a"],"windows":%s,"input_ids":%s,"token_type_ids":%s,"attention_mask":%s%s}' "$I32_0" "$1" "$2" "$3" "$4"; }
  B11='{"dtype":"i32","shape":[1,1],"data":{"$bin":"AQAAAA=="}}'
  frames_case "hello without batch_size" "$cls" '' train --preset tiny --vocab "$VOCAB"
  frames_case "label 5 of 2 classes" "$bh" "$(batch "$B11" "$B11" "$B11" ',"labels":{"dtype":"i32","shape":[1],"data":{"$bin":"BQAAAA=="}}')" train --preset tiny --vocab "$VOCAB"
  frames_case "batch past the hello" "$bh" "$(batch '{"dtype":"i32","shape":[1,5],"data":{"$bin":"AQAAAAEAAAABAAAAAQAAAAEAAAA="}}' "$B11" "$B11" '')" train --preset tiny --vocab "$VOCAB"
  frames_case "no checkpoint" "$bh" '' "$EVAL" --checkpoint "$TMP/none"
  frames_case "input_ids of another shape" "$bh" "$(batch "$B11" '{"dtype":"i32","shape":[1,2],"data":{"$bin":"AQAAAAEAAAA="}}' "$B11" '')" train --preset tiny --vocab "$VOCAB"
  # postprocess
  logits() { printf '{"v":1,"k":"logits","seq":0,"example_ids":%s,"logits":%s}' "$1" "$2"; }
  frames_case "logits with no class" "$cls" "$(logits '["a"]' '{"dtype":"f32","shape":[1,0],"data":{"$bin":""}}')" postprocess
  frames_case "ids not the rows" "$cls" "$(logits '["a","b"]' "$F32_12")" postprocess
  frames_case "logits twice" "$cls" "$(logits '["a"]' "$F32_12")
$(logits '["a"]' "$F32_12")" postprocess
  frames_case "three classes for two labels" "$cls" "$(logits '["a"]' '{"dtype":"f32","shape":[1,3],"data":{"$bin":"AAAAAAAAAAAAAAAA"}}')" postprocess
  # score
  pred() { printf '{"v":1,"k":"prediction","seq":%d%s,"label":1,"gold":%s}' "$1" "$2" "$3"; }
  frames_case "prediction without id" "$cls" "$(pred 0 '' 1)" score
  frames_case "id twice" "$cls" "$(pred 0 ',"example_id":"a"' 1)
$(pred 1 ',"example_id":"a"' 1)" score
  frames_case "gold a float" "$cls" "$(pred 0 ',"example_id":"a"' 1.5)" score
  echo "# $cases cases" >&3
}

@test "every refusal of a bad file or option value that names a file ends with its WHERE" {
  printf 'sentence\tlabel\na\x00b\tpositive\n' >"$TMP/nul.tsv"
  printf 'sentence\tlabel\nfine\tneutral\n' >"$TMP/unknown.tsv"
  printf 'sentence\tlabel\nfine\n' >"$TMP/short.tsv"
  printf '{"data": [' >"$TMP/cut.json"
  printf 'x' | gzip | head -c 12 >"$TMP/cut.tsv.gz"
  csv="--format csv --delimiter tab --text-column sentence --label-column label --label-map negative,positive"
  file_case "no such file" extract "$TMP/none.tsv"
  file_case "NUL byte" extract $csv "$TMP/nul.tsv"
  file_case "label not in the map" extract $csv "$TMP/unknown.tsv"
  file_case "record too short" extract $csv "$TMP/short.tsv"
  file_case "cut SQuAD" extract --format squad "$TMP/cut.json"
  file_case "cut gzip" extract $csv "$TMP/cut.tsv.gz"
  file_case "no vocab" tokenize --vocab "$TMP/none.txt"
  file_case "no checkpoint" train --checkpoint "$TMP/none"
  file_case "score: no dataset" score --dataset "$TMP/none.json" --predictions "$TMP/none.json"
  file_case "json2frames: no file" json2frames "$TMP/none.jsonl"
  printf '{"v":1,"k":"hello","from":"t"}\n{"v":1,"k":"hello","from":"a","from":"b"}\n' >"$TMP/dup.jsonl"
  file_case "json2frames: a key twice" json2frames "$TMP/dup.jsonl"
  printf '{"v":1,"k":\n' >"$TMP/bad.jsonl"
  file_case "json2frames: bad JSON" json2frames "$TMP/bad.jsonl"
  echo "# $cases cases" >&3
}
