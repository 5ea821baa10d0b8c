#!/usr/bin/env bats
# score: the official SQuAD numbers (file mode and frame mode) and classification metrics.
# Reference numbers: tests/fixtures/squad/expected.json, written by the independent Python
# implementation tests/reference/squad_metric_ref.py.
load test_helper

SQ="$BERTPIPE_TOP/tests/fixtures/squad"

official() { python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))[sys.argv[2]]["official_output"])' "$SQ/expected.json" "$1"; }

# DATASET PREDICTIONS -> QA prediction frames as JSON lines: one per question that has a
# prediction, with its gold texts, is_impossible, and span_match true on every other frame.
prediction_frames() {
  python3 - "$1" "$2" <<'PY'
import json, sys
data, preds = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(json.dumps({"v": 1, "k": "hello", "from": "test", "task": "qa"}))
n = 0
for a in data["data"]:
    for p in a["paragraphs"]:
        for q in p["qas"]:
            if q["id"] not in preds: continue
            print(json.dumps({"v": 1, "k": "prediction", "seq": n, "example_id": q["id"], "text": preds[q["id"]],
                              "score": 1.0, "answers": [x["text"] for x in q["answers"]],
                              "is_impossible": q.get("is_impossible", False), "span_match": n % 2 == 0},
                             ensure_ascii=False))
            n += 1
print(json.dumps({"v": 1, "k": "eos", "from": "test", "count": n}))
PY
}

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

@test "file mode reads the dataset from .gz, .zip and .tar.gz as from plain JSON" {
  official v1 >"$TMP/want"
  gzip -c "$SQ/tiny-v1.json" >"$TMP/dev.json.gz"
  score --dataset "$TMP/dev.json.gz" --predictions "$SQ/tiny-v1-predictions.json" >"$TMP/got" 2>/dev/null
  cmp "$TMP/want" "$TMP/got"
  (cd "$SQ" && zip -q "$TMP/dev.zip" tiny-v1.json README.md)
  score --dataset "$TMP/dev.zip" --predictions "$SQ/tiny-v1-predictions.json" >"$TMP/got" 2>/dev/null
  cmp "$TMP/want" "$TMP/got"
  tar -C "$SQ" -czf "$TMP/dev.tar.gz" README.md tiny-v1.json
  score --dataset "$TMP/dev.tar.gz" --predictions "$SQ/tiny-v1-predictions.json" >"$TMP/got" 2>/dev/null
  cmp "$TMP/want" "$TMP/got"
}

@test "file mode: unreadable or non-SQuAD input is one error line naming the file" {
  printf '{"data": [' >"$TMP/cut.json"
  run bash -c "score --dataset '$TMP/cut.json' --predictions '$SQ/tiny-v1-predictions.json' 2>'$TMP/err' >'$TMP/out'"
  [ "$status" -ne 0 ]
  [ ! -s "$TMP/out" ]
  assert_one_error_line "$TMP/err" score
  grep -q "cut.json" "$TMP/err"
  (cd "$SQ" && zip -q "$TMP/nojson.zip" README.md)
  run bash -c "score --dataset '$TMP/nojson.zip' --predictions '$SQ/tiny-v1-predictions.json' 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" score
  grep -q "nojson.zip" "$TMP/err"
  printf '["not", "squad"]\n' >"$TMP/list.json"
  run bash -c "score --dataset '$TMP/list.json' --predictions '$SQ/tiny-v1-predictions.json' 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" score
  grep -q "list.json" "$TMP/err"
}

@test "frame mode v2: is_impossible in the frames gives the official HasAns/NoAns numbers" {
  prediction_frames "$SQ/tiny-v2.json" "$SQ/tiny-v2-predictions.json" >"$TMP/p.jsonl"
  # --out -: the metric frame takes stdout, so the JSON summary goes to stderr
  json2frames "$TMP/p.jsonl" | score --out - 2>"$TMP/err" | frames2json >"$TMP/m.jsonl"
  python3 - "$SQ/expected.json" "$TMP/err" "$TMP/m.jsonl" <<'PY2'
import json, sys
want = json.load(open(sys.argv[1]))["v2"]["result"]
line = [l for l in open(sys.argv[2]) if l.startswith("{")]
assert len(line) == 1, line
got = json.loads(line[0])
for k in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"):
    mine = got["exact_match" if k == "exact" else k]
    assert abs(mine - want[k]) < 1e-9, (k, mine, want[k])
m = [json.loads(l) for l in open(sys.argv[3])]
metric = [f for f in m if f["k"] == "metric"]
assert len(metric) == 1 and abs(metric[0]["no_ans_f1"] - want["NoAns_f1"]) < 1e-9, metric
PY2
  grep -q "HasAns exact 60.00" "$TMP/err"
}

@test "classification: unlabelled predictions are counted, not scored" {
  printf '%s\n' '{"v":1,"k":"hello","from":"t","task":"classification","labels":["neg","pos"]}' \
    '{"v":1,"k":"prediction","seq":0,"example_id":"a","label":1,"gold":1}' \
    '{"v":1,"k":"prediction","seq":1,"example_id":"b","label":1,"gold":-1}' \
    '{"v":1,"k":"prediction","seq":2,"example_id":"c","label":0,"gold":1}' \
    '{"v":1,"k":"eos","from":"t","count":3}' >"$TMP/p.jsonl"
  json2frames "$TMP/p.jsonl" | score >"$TMP/m.json" 2>"$TMP/err"
  grep -q '"accuracy": 0.5' "$TMP/m.json"
  grep -q "1 of 3 predictions carry no gold label" "$TMP/err"
  refute_sanitizer "$TMP/err"
}

@test "frame mode: prediction frames give the same EM and F1 as the file mode" {
  prediction_frames "$SQ/tiny-v1.json" "$SQ/tiny-v1-predictions.json" >"$TMP/p.jsonl"
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
