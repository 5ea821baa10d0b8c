#!/usr/bin/env bats
# postprocess: QA logits frames + the examples' contexts -> answers, on the hand-made cases of
# tests/fixtures/squad/postprocess-cases.json (expected answers from the numpy reference
# tests/reference/qa_postprocess_ref.py); classification logits -> labels and probabilities.
load test_helper

SQ="$BERTPIPE_TOP/tests/fixtures/squad"

@test "QA: every hand-made case gives the reference answer and n-best list" {
  python3 - "$SQ/postprocess-cases.json" "$TMP" <<'PY'
import base64, json, struct, sys
cases = json.load(open(sys.argv[1]))["cases"]
out = sys.argv[2]
# v1 cases with default options only: one stream, one example per case
chosen = [i for i, c in enumerate(cases) if not c["options"]["v2"] and c["options"]["n_best"] == 20 and c["options"]["max_answer_length"] == 30]
def t(vals, shape, fmt, dtype):
    return {"dtype": dtype, "shape": shape, "data": {"$bin": base64.b64encode(struct.pack("<%d%s" % (len(vals), fmt), *vals)).decode()}}
with open(out + "/examples.jsonl", "w") as ex, open(out + "/logits.jsonl", "w") as lg:
    ex.write(json.dumps({"v": 1, "k": "hello", "from": "t", "task": "qa"}) + "\n")
    lg.write(json.dumps({"v": 1, "k": "hello", "from": "t", "task": "qa"}) + "\n")
    nl = 0
    for n, i in enumerate(chosen):
        c = cases[i]
        ex.write(json.dumps({"v": 1, "k": "example", "seq": n, "example_id": "case-%d" % i, "context": c["context"],
                             "question": "?", "title": "", "answers": [], "is_impossible": False}, ensure_ascii=False) + "\n")
        for w, win in enumerate(c["windows"]):
            T = len(win["start"])
            offs = [v for pair in win["offsets"] for v in pair]
            lg.write(json.dumps({"v": 1, "k": "logits", "seq": nl, "example_ids": ["case-%d" % i], "windows": t([w], [1], "i", "i32"),
                                 "start_logits": t(win["start"], [1, T], "f", "f32"), "end_logits": t(win["end"], [1, T], "f", "f32"),
                                 "offsets": t(offs, [1, T, 2], "i", "i32")}) + "\n")
            nl += 1
    ex.write(json.dumps({"v": 1, "k": "eos", "from": "t", "count": len(chosen)}) + "\n")
    lg.write(json.dumps({"v": 1, "k": "eos", "from": "t", "count": nl}) + "\n")
json.dump(chosen, open(out + "/chosen.json", "w"))
PY
  json2frames "$TMP/examples.jsonl" --out "file:$TMP/examples.frames"
  json2frames "$TMP/logits.jsonl" | postprocess --examples "file:$TMP/examples.frames" \
    --predictions "$TMP/predictions.json" --nbest "$TMP/nbest.json" --text "$TMP/answers.txt" | frames2json >"$TMP/pred.jsonl"
  python3 - "$SQ/postprocess-expected.json" "$TMP" <<'PY'
import json, sys
want = json.load(open(sys.argv[1]))["results"]
out = sys.argv[2]
chosen = json.load(open(out + "/chosen.json"))
preds = json.load(open(out + "/predictions.json"))
nbest = json.load(open(out + "/nbest.json"))
assert len(chosen) >= 3, chosen
for i in chosen:
    key = "case-%d" % i
    assert preds[key] == want[i]["answer"], (key, preds[key], want[i]["answer"])
    assert [e["text"] for e in nbest[key]] == [e["text"] for e in want[i]["nbest"]], key
frames = [json.loads(l) for l in open(out + "/pred.jsonl")]
assert [f["text"] for f in frames if f["k"] == "prediction"] == [want[i]["answer"] for i in chosen]
PY
  [ "$(wc -l <"$TMP/answers.txt")" -eq "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$TMP/chosen.json")" ]
}

@test "QA: an example whose windows all lack logits is an error naming it" {
  printf '%s\n' '{"v":1,"k":"hello","from":"t","task":"qa"}' \
    '{"v":1,"k":"example","seq":0,"example_id":"lonely","question":"q","context":"c","title":"","answers":[],"is_impossible":false}' \
    '{"v":1,"k":"eos","from":"t","count":1}' | json2frames --out "file:$TMP/ex.frames"
  printf '%s\n' '{"v":1,"k":"hello","from":"t","task":"qa"}' '{"v":1,"k":"eos","from":"t","count":0}' >"$TMP/l.jsonl"
  run bash -c "json2frames '$TMP/l.jsonl' | postprocess --examples 'file:$TMP/ex.frames' 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" postprocess
  grep -q "example lonely has no logits" "$TMP/err"
}

@test "classification: softmax probabilities, argmax label, gold and loss carried, predictions file" {
  python3 - >"$TMP/l.jsonl" <<'PY'
import base64, json, struct
def t(vals, shape, fmt, dtype):
    return {"dtype": dtype, "shape": shape, "data": {"$bin": base64.b64encode(struct.pack("<%d%s" % (len(vals), fmt), *vals)).decode()}}
print(json.dumps({"v": 1, "k": "hello", "from": "t", "task": "classification", "labels": ["neg", "pos"]}))
print(json.dumps({"v": 1, "k": "logits", "seq": 0, "example_ids": ["a", "b"], "windows": t([0, 0], [2], "i", "i32"),
                  "logits": t([0.0, 2.0, 1.0, -1.0], [2, 2], "f", "f32"), "labels": t([1, 1], [2], "i", "i32")}))
print(json.dumps({"v": 1, "k": "eos", "from": "t", "count": 1}))
PY
  json2frames "$TMP/l.jsonl" | postprocess --predictions "$TMP/p.tsv" --text "$TMP/p.txt" | frames2json >"$TMP/p.jsonl"
  grep -q '"example_id":"a","label":1,' "$TMP/p.jsonl"
  grep -q '"example_id":"b","label":0,' "$TMP/p.jsonl"
  grep '"example_id":"b"' "$TMP/p.jsonl" | grep -q '"gold":1,"loss":2.126928'
  [ "$(sed -n 1p "$TMP/p.txt")" = "$(printf 'pos\t0.8808')" ]
  [ "$(head -1 "$TMP/p.tsv")" = "$(printf 'index\tprediction\tp_neg\tp_pos')" ]
}
