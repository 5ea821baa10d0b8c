#!/usr/bin/env bats
# The tokenize stage: classification and QA features, windows with context-only offsets,
# run_qa labels, parallel workers, and its refusals. (The tokenizer itself is checked token
# for token against Hugging Face by tests/unit/test_tokenizer.c and make parity-tokenize.)
load test_helper

VOCAB="$BERTPIPE_TOP/pipelines/default/vocab.txt"

qa_examples() {
  cat >"$TMP/qa.jsonl" <<'JSON'
{"v":1,"k":"hello","from":"test","task":"qa"}
{"v":1,"k":"example","seq":0,"example_id":"q1","question":"Where was Marta Quill born?","context":"Marta Quill was born in Lisbon in 1931. Later Marta moved to Krakow, where the family had a small house. Marta worked as a poet for most of a long life.","answers":[{"text":"Krakow","answer_start":61}]}
{"v":1,"k":"example","seq":1,"example_id":"q2","question":"Where did Marta move?","context":"Marta moved to Ghent.","answers":[{"text":"Ghent","answer_start":15}]}
{"v":1,"k":"eos","from":"test","count":2}
JSON
}

# one line per feature: example_id window start end n_tokens first_offsets...
summarise() {
  python3 -c '
import base64, json, struct, sys
for line in sys.stdin:
    f = json.loads(line)
    if f["k"] != "feature": continue
    ids = base64.b64decode(f["input_ids"]["data"]["$bin"])
    off = struct.unpack("<%di" % (len(ids) // 2), base64.b64decode(f["offsets"]["data"]["$bin"])) if "offsets" in f else ()
    print(f["example_id"], f["window"], f.get("start_position"), f.get("end_position"), len(ids) // 4, *off[:18])
'
}

@test "QA: overflow windows share doc-stride tokens; offsets only on context tokens; run_qa labels" {
  qa_examples
  json2frames "$TMP/qa.jsonl" | tokenize --vocab "$VOCAB" --max-length 24 --doc-stride 6 | frames2json | summarise >"$TMP/s"
  cat "$TMP/s"
  # q1 needs several windows of 24 tokens; q2 fits in one
  [ "$(grep -c '^q1 ' "$TMP/s")" -ge 3 ]
  [ "$(grep -c '^q2 ' "$TMP/s")" -eq 1 ]
  # [CLS], the 6 question tokens and [SEP] have no offsets; the first context token "marta" is [0,5)
  grep -q '^q1 0 0 0 24 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 0 5$' "$TMP/s"
  # the answer "krakow" is inside exactly one window with a real label; the others point at [CLS]
  [ "$(grep '^q1 ' "$TMP/s" | awk '$3 > 0' | wc -l)" -ge 1 ]
  grep '^q1 0 ' "$TMP/s" | grep -q '^q1 0 0 0 '
  grep -q '^q2 0 [1-9][0-9]* [1-9][0-9]* ' "$TMP/s"
}

@test "classification: one feature per example, truncated to --max-length, label kept" {
  printf '%s\n' '{"v":1,"k":"hello","from":"t","task":"classification","labels":["negative","positive"]}' \
    '{"v":1,"k":"example","seq":0,"example_id":"a","text":"the plot was dull and the acting was flat and the ending was messy","label":0}' \
    '{"v":1,"k":"example","seq":1,"example_id":"b","text":"","label":1}' \
    '{"v":1,"k":"eos","from":"t","count":2}' >"$TMP/c.jsonl"
  json2frames "$TMP/c.jsonl" | tokenize --vocab "$VOCAB" --max-length 8 | frames2json >"$TMP/f.jsonl"
  grep '"example_id":"a"' "$TMP/f.jsonl" | grep -q '"input_ids":{"dtype":"i32","shape":\[8\]'
  grep '"example_id":"a"' "$TMP/f.jsonl" | grep -q '"label":0'
  # empty text is [CLS] [SEP], as Hugging Face gives
  grep '"example_id":"b"' "$TMP/f.jsonl" | grep -q '"shape":\[2\],"data":{"$bin":"AgAAAAMAAAA="}'
  grep -q '"labels":\["negative","positive"\]' "$TMP/f.jsonl"
  grep -q '"vocab_size":' "$TMP/f.jsonl"
}

@test "two tokenize workers between a fan-out and a fan-in give every feature exactly once" {
  qa_examples
  # 40 copies of the two examples with distinct ids
  python3 - "$TMP/qa.jsonl" >"$TMP/many.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
print(json.dumps(lines[0]))
n = 0
for i in range(40):
    for ex in lines[1:3]:
        e = dict(ex, seq=n, example_id="%s-%d" % (ex["example_id"], i)); n += 1
        print(json.dumps(e, ensure_ascii=False))
print(json.dumps({"v": 1, "k": "eos", "from": "test", "count": n}))
PY
  json2frames "$TMP/many.jsonl" | tokenize --vocab "$VOCAB" --max-length 24 --doc-stride 6 | frames2json | summarise | sort >"$TMP/one"
  frames2json --in "ipc://$TMP/feat" --producers 2 >"$TMP/two.jsonl" & c=$!
  tokenize --vocab "$VOCAB" --max-length 24 --doc-stride 6 --in "ipc://$TMP/w0" --out "ipc://$TMP/feat" & w0=$!
  tokenize --vocab "$VOCAB" --max-length 24 --doc-stride 6 --in "ipc://$TMP/w1" --out "ipc://$TMP/feat" & w1=$!
  json2frames --recount "$TMP/many.jsonl" | tap --log /dev/null --out "ipc://$TMP/w0,ipc://$TMP/w1"
  wait $c
  wait $w0
  wait $w1
  summarise <"$TMP/two.jsonl" | sort >"$TMP/two"
  [ "$(wc -l <"$TMP/one")" -gt 80 ]
  cmp "$TMP/one" "$TMP/two"
}

@test "an answer that does not slice its context is reported by id and dropped; --strict stops" {
  qa_examples
  sed -i 's/"answer_start":61/"answer_start":60/' "$TMP/qa.jsonl"
  json2frames "$TMP/qa.jsonl" | tokenize --vocab "$VOCAB" --max-length 24 --doc-stride 6 2>"$TMP/err" | frames2json >"$TMP/f.jsonl"
  grep -q "warning: example q1: .*example dropped" "$TMP/err"
  ! grep -q '"example_id":"q1"' "$TMP/f.jsonl"
  grep -q '"example_id":"q2"' "$TMP/f.jsonl"
  run bash -c "json2frames '$TMP/qa.jsonl' | tokenize --vocab '$VOCAB' --strict 2>'$TMP/err2' >/dev/null"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err2" tokenize
  grep -q "(example q1)" "$TMP/err2"
}

@test "invalid UTF-8 is refused naming the field and the place in the stream; a vocab without [CLS] is refused" {
  # hello, an example whose text is "caf" + a lone lead byte, eos: raw MessagePack (JSON cannot carry it)
  printf '\x83\xa1v\x01\xa1k\xa5hello\xa4from\xa1t''\x86\xa1v\x01\xa1k\xa7example\xa3seq\x00\xaaexample_id\xa3bad\xa4text\xa4caf\xc3\xa5label\x00''\x84\xa1v\x01\xa1k\xa3eos\xa4from\xa1t\xa5count\x01' >"$TMP/u.bin"
  run bash -c "tokenize --vocab '$VOCAB' <'$TMP/u.bin' 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  # the decoder refuses it (wire: strings are UTF-8), before any stage reads the example
  grep -q "field 'text' is a string that is not UTF-8 (byte 3), after 0 frames" "$TMP/err"
  grep -v '^\[CLS\]$' "$VOCAB" >"$TMP/vocab.txt"
  run bash -c "tokenize --vocab '$TMP/vocab.txt' </dev/null 2>'$TMP/err3'"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err3" tokenize
  grep -q "CLS" "$TMP/err3"
}

@test "--checkpoint takes casing and max length from tokenizer_config.json; transformers' unbounded length is no length" {
  mkdir "$TMP/ck"
  cp "$VOCAB" "$TMP/ck/vocab.txt"
  printf '{"v":1,"k":"hello","from":"test","task":"classification"}\n{"v":1,"k":"example","seq":0,"example_id":"a","text":"The Movie was great and the cast was wonderful"}\n{"v":1,"k":"eos","from":"test","count":1}\n' >"$TMP/ex.jsonl"
  # int(1e30): what save_pretrained writes for a tokenizer without a maximum
  printf '{"do_lower_case": false, "model_max_length": 1000000000000000019884624838656}\n' >"$TMP/ck/tokenizer_config.json"
  json2frames "$TMP/ex.jsonl" | tokenize --checkpoint "$TMP/ck" | frames2json >"$TMP/cased"
  grep -q '"lowercase":false' "$TMP/cased" && grep -q '"max_length":128' "$TMP/cased"
  printf '{"do_lower_case": true, "model_max_length": 8}\n' >"$TMP/ck/tokenizer_config.json"
  json2frames "$TMP/ex.jsonl" | tokenize --checkpoint "$TMP/ck" | frames2json >"$TMP/uncased"
  grep -q '"lowercase":true' "$TMP/uncased" && grep -q '"max_length":8' "$TMP/uncased"
  grep '"k":"feature"' "$TMP/uncased" | grep -q '"input_ids":{"dtype":"i32","shape":\[8\]'
  # "The" and "Movie" are not in the (lowercase) vocabulary: cased ids differ from uncased ones
  first3() { grep '"k":"feature"' "$1" | sed 's/.*"input_ids":{[^}]*"\$bin":"\(.\{16\}\).*/\1/'; }
  [ -n "$(first3 "$TMP/cased")" ] && [ "$(first3 "$TMP/cased")" != "$(first3 "$TMP/uncased")" ]
}
