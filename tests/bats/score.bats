#!/usr/bin/env bats
# score: the official SQuAD numbers (file mode and frame mode) and classification metrics.
# Reference numbers: tests/fixtures/squad/expected.json, written by the independent Python
# implementation tests/reference/squad_metric_ref.py.
load test_helper

SQ="$BERTPIPE_TOP/tests/fixtures/squad"

official() { python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))[sys.argv[2]]["official_output"])' "$SQ/expected.json" "$1"; }

@test "file mode prints exactly what the official v1.1 script prints" {
  score --dataset "$SQ/tiny-v1.json" --predictions "$SQ/tiny-v1-predictions.json" >"$TMP/got" 2>"$TMP/err"
  official v1 >"$TMP/want"
  cmp "$TMP/want" "$TMP/got"
  grep -q "1 questions have no prediction" "$TMP/err"
}

@test "file mode prints exactly what the official v2.0 script prints" {
  score --dataset "$SQ/tiny-v2.json" --predictions "$SQ/tiny-v2-predictions.json" >"$TMP/got" 2>/dev/null
  official v2 >"$TMP/want"
  cmp "$TMP/want" "$TMP/got"
}

@test "frame mode: prediction frames give the same EM and F1 as the file mode" {
  python3 - "$SQ/tiny-v1.json" "$SQ/tiny-v1-predictions.json" >"$TMP/p.jsonl" <<'PY'
import json, sys
data, preds = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(json.dumps({"v": 1, "k": "hello", "from": "test", "task": "qa"}))
n = 0
for a in data["data"]:
    for p in a["paragraphs"]:
        for q in p["qas"]:
            if q["id"] not in preds: continue
            print(json.dumps({"v": 1, "k": "prediction", "seq": n, "example_id": q["id"], "text": preds[q["id"]],
                              "score": 1.0, "answers": [x["text"] for x in q["answers"]], "is_impossible": False,
                              "span_match": n % 2 == 0}, ensure_ascii=False))
            n += 1
print(json.dumps({"v": 1, "k": "eos", "from": "test", "count": n}))
PY
  json2frames "$TMP/p.jsonl" | score >"$TMP/got.json" 2>/dev/null
  # lh-8 has no prediction here, so the frame mode averages over 12 questions
  python3 - "$SQ/expected.json" "$TMP/got.json" <<'PY'
import json, sys
per = json.load(open(sys.argv[1]))["v1"]["per_question"]
got = json.load(open(sys.argv[2]))
answered = [v for k, v in per.items() if k != "lh-8"]
em = 100.0 * sum(v[0] for v in answered) / len(answered)
f1 = 100.0 * sum(v[1] for v in answered) / len(answered)
assert abs(got["exact_match"] - em) < 1e-9 and abs(got["f1"] - f1) < 1e-9, (got, em, f1)
assert abs(got["span_accuracy"] - 100.0 * 6 / 12) < 1e-9, got
PY
}

@test "classification: accuracy, macro-F1, confusion matrix and a metric frame" {
  printf '%s\n' '{"v":1,"k":"hello","from":"t","task":"classification","labels":["neg","pos"]}' \
    '{"v":1,"k":"prediction","seq":0,"example_id":"a","label":1,"gold":1,"loss":0.1}' \
    '{"v":1,"k":"prediction","seq":1,"example_id":"b","label":1,"gold":0,"loss":2.0}' \
    '{"v":1,"k":"prediction","seq":2,"example_id":"c","label":0,"gold":0,"loss":0.3}' \
    '{"v":1,"k":"prediction","seq":3,"example_id":"d","label":1,"gold":1,"loss":0.2}' \
    '{"v":1,"k":"eos","from":"t","count":4}' >"$TMP/p.jsonl"
  json2frames "$TMP/p.jsonl" | score --json "$TMP/m.json" --out "file:$TMP/m.frames" 2>"$TMP/table"
  grep -q '"accuracy": 0.75' "$TMP/m.json"
  grep -q '"confusion_matrix": \[\[1, 1\], \[0, 2\]\]' "$TMP/m.json"
  # macro-F1: neg P=1 R=.5 F1=2/3; pos P=2/3 R=1 F1=.8 -> 0.7333...
  grep -q '"macro_f1": 0.7333333333333' "$TMP/m.json"
  grep -q '"eval_loss": 0.65' "$TMP/m.json"
  grep -q "confusion matrix" "$TMP/table"
  frames2json --in "file:$TMP/m.frames" | grep -q '"scope":"score","examples":4,"accuracy":0.75'
}

@test "a prediction stream cut short is not scored" {
  printf '%s\n' '{"v":1,"k":"hello","from":"t","task":"qa"}' \
    '{"v":1,"k":"prediction","seq":0,"example_id":"a","text":"x","answers":["x"]}' >"$TMP/p.jsonl"
  run bash -c "json2frames '$TMP/p.jsonl' | score 2>'$TMP/err' >'$TMP/out'"
  [ "$status" -ne 0 ]
  [ ! -s "$TMP/out" ]
  assert_one_error_line "$TMP/err" score
}
