#!/usr/bin/env bats
# postprocess: QA logits frames + the examples' contexts -> answers, on the hand-made cases of
# tests/fixtures/squad/postprocess-cases.json (expected answers from the numpy reference
# tests/reference/qa_postprocess_ref.py); classification logits -> labels and probabilities.
load test_helper

SQ="$BERTPIPE_TOP/tests/fixtures/squad"

# b64 tensor helper shared by the python snippets below
TENSOR_PY='
import base64, struct
def t(vals, shape, fmt, dtype):
    return {"dtype": dtype, "shape": shape, "data": {"$bin": base64.b64encode(struct.pack("<%d%s" % (len(vals), fmt), *vals)).decode()}}
'

@test "QA: every hand-made case, v1 and v2 options alike, gives the reference answer, n-best list and span_match" {
  # One stream pair per option set. Each window carries gold start/end positions: the tokens
  # of the reference's best span in its window (CLS for the null), off by one token on odd
  # cases, so span_match must come out true on even cases and false on odd ones.
  python3 - "$SQ/postprocess-cases.json" "$SQ/postprocess-expected.json" "$TMP" <<PY
$TENSOR_PY
import json, sys
cases = json.load(open(sys.argv[1]))["cases"]
want = json.load(open(sys.argv[2]))["results"]
out = sys.argv[3]
def best_entry(r):
    if r["predicted_null"]: return [e for e in r["nbest"] if e["kind"] == "null"][0]
    return [e for e in r["nbest"] if e["kind"] != "null"][0]
def gold_tokens(c, e):
    if e["kind"] != "span": return 0, 0
    win = c["windows"][e["window"]]
    offs = win["offsets"]
    for i in range(len(offs)):
        for j in range(i, len(offs)):
            if offs[i][0] < 0 or offs[j][1] < 0: continue
            if (c["context"][offs[i][0]:offs[j][1]] == e["text"] and abs(win["start"][i] - e["start_logit"]) < 1e-6
                    and abs(win["end"][j] - e["end_logit"]) < 1e-6):
                return i, j
    raise SystemExit("no tokens for %r" % e)
groups = {}
for i, c in enumerate(cases):
    o = c["options"]
    groups.setdefault(json.dumps(o, sort_keys=True), []).append(i)
plan = []
for g, (okey, idx) in enumerate(sorted(groups.items())):
    o = json.loads(okey)
    args = ["--n-best", str(o["n_best"]), "--max-answer-length", str(o["max_answer_length"])]
    if o["v2"]: args += ["--version-2", "--null-threshold", repr(o["threshold"])]
    plan.append({"group": g, "args": args, "cases": idx})
    hello = json.dumps({"v": 1, "k": "hello", "from": "t", "task": "qa"})
    with open("%s/ex-%d.jsonl" % (out, g), "w") as ex, open("%s/lg-%d.jsonl" % (out, g), "w") as lg:
        ex.write(hello + "\n"); lg.write(hello + "\n")
        nl = 0
        for n, i in enumerate(idx):
            c, e = cases[i], best_entry(want[i])
            ex.write(json.dumps({"v": 1, "k": "example", "seq": n, "example_id": "case-%d" % i, "context": c["context"],
                                 "question": "?", "title": "", "answers": [{"text": want[i]["answer"], "answer_start": 0}],
                                 "is_impossible": False}, ensure_ascii=False) + "\n")
            gs, ge = gold_tokens(c, e) if e["window"] >= 0 else (0, 0)
            for w, win in enumerate(c["windows"]):
                T = len(win["start"])
                s_, e_ = (gs, ge + i % 2) if w == e["window"] else (0, 0)
                lg.write(json.dumps({"v": 1, "k": "logits", "seq": nl, "example_ids": ["case-%d" % i], "windows": t([w], [1], "i", "i32"),
                                     "start_logits": t(win["start"], [1, T], "f", "f32"), "end_logits": t(win["end"], [1, T], "f", "f32"),
                                     "offsets": t([v for pair in win["offsets"] for v in pair], [1, T, 2], "i", "i32"),
                                     "start_positions": t([s_], [1], "i", "i32"), "end_positions": t([e_], [1], "i", "i32")}) + "\n")
                nl += 1
        ex.write(json.dumps({"v": 1, "k": "eos", "from": "t", "count": len(idx)}) + "\n")
        lg.write(json.dumps({"v": 1, "k": "eos", "from": "t", "count": nl}) + "\n")
json.dump(plan, open(out + "/plan.json", "w"))
with open(out + "/plan.sh", "w") as f:
    for p in plan: f.write("%d %s\n" % (p["group"], " ".join(p["args"])))
PY
  [ "$(wc -l <"$TMP/plan.sh")" -ge 4 ]
  while read -r g args; do
    json2frames "$TMP/ex-$g.jsonl" --out "file:$TMP/ex-$g.frames"
    # shellcheck disable=SC2086
    json2frames "$TMP/lg-$g.jsonl" | postprocess --examples "file:$TMP/ex-$g.frames" $args \
      --predictions "$TMP/pred-$g.json" --nbest "$TMP/nbest-$g.json" --text "$TMP/answers-$g.txt" 2>"$TMP/err-$g" |
      frames2json >"$TMP/frames-$g.jsonl"
    refute_sanitizer "$TMP/err-$g"
  done <"$TMP/plan.sh"
  python3 - "$SQ/postprocess-expected.json" "$TMP" <<'PY'
import json, sys
want = json.load(open(sys.argv[1]))["results"]
out = sys.argv[2]
checked = 0
for p in json.load(open(out + "/plan.json")):
    g = p["group"]
    preds = json.load(open("%s/pred-%d.json" % (out, g)))
    nbest = json.load(open("%s/nbest-%d.json" % (out, g)))
    frames = [f for f in map(json.loads, open("%s/frames-%d.jsonl" % (out, g))) if f["k"] == "prediction"]
    assert [f["example_id"] for f in frames] == ["case-%d" % i for i in p["cases"]], frames
    assert len(open("%s/answers-%d.txt" % (out, g)).readlines()) == len(p["cases"])
    for f, i in zip(frames, p["cases"]):
        key, w = "case-%d" % i, want[i]
        assert preds[key] == w["answer"] and f["text"] == w["answer"], (key, preds[key], f["text"], w["answer"])
        assert [e["text"] for e in nbest[key]] == [e["text"] for e in w["nbest"]], key
        for mine, ref in zip(nbest[key], w["nbest"]):
            assert abs(mine["probability"] - ref["probability"]) < 1e-6, (key, mine, ref)
        assert f["answers"] == [w["answer"]], f
        if any(e["kind"] == "empty" for e in w["nbest"]) and not w["predicted_null"]:
            assert "span_match" not in f, f
        else:
            assert f["span_match"] == (i % 2 == 0), (key, f)
        checked += 1
assert checked == len(want), (checked, len(want))
PY
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

@test "QA: --allow-missing answers the others and counts the example without logits" {
  python3 - "$TMP" <<PY
$TENSOR_PY
import json, sys
out = sys.argv[1]
hello = {"v": 1, "k": "hello", "from": "t", "task": "qa"}
with open(out + "/ex.jsonl", "w") as f:
    for r in [hello,
              {"v": 1, "k": "example", "seq": 0, "example_id": "lonely", "question": "q", "context": "red fox", "title": "",
               "answers": [], "is_impossible": False},
              {"v": 1, "k": "example", "seq": 1, "example_id": "fox", "question": "q", "context": "red fox", "title": "",
               "answers": [{"text": "fox", "answer_start": 4}], "is_impossible": False},
              {"v": 1, "k": "eos", "from": "t", "count": 2}]:
        f.write(json.dumps(r) + "\n")
with open(out + "/lg.jsonl", "w") as f:
    for r in [hello,
              {"v": 1, "k": "logits", "seq": 0, "example_ids": ["fox"], "windows": t([0], [1], "i", "i32"),
               "start_logits": t([0, -1, 3, 1], [1, 4], "f", "f32"), "end_logits": t([0, -1, 0, 4], [1, 4], "f", "f32"),
               "offsets": t([-1, -1, -1, -1, 0, 3, 4, 7], [1, 4, 2], "i", "i32")},
              {"v": 1, "k": "eos", "from": "t", "count": 1}]:
        f.write(json.dumps(r) + "\n")
PY
  json2frames "$TMP/ex.jsonl" --out "file:$TMP/ex.frames"
  json2frames "$TMP/lg.jsonl" | BERTPIPE_QUIET=0 postprocess --examples "file:$TMP/ex.frames" --allow-missing \
    --predictions "$TMP/p.json" 2>"$TMP/err" | frames2json >"$TMP/pred.jsonl"
  # start 3 (red) + end 4 (fox) = 7 beats red (3+0) and fox (1+4)
  [ "$(cat "$TMP/p.json" | tr -d ' \n')" = '{"fox":"redfox"}' ]
  [ "$(grep -c '"k":"prediction"' "$TMP/pred.jsonl")" -eq 1 ]
  grep -q "1 examples had no logits and got no prediction" "$TMP/err"
  refute_sanitizer "$TMP/err"
  # the same window twice (a replayed stream) is an error, not a doubled vote
  { sed -n 1,2p "$TMP/lg.jsonl"; sed -n 2p "$TMP/lg.jsonl" | sed 's/"seq": 0/"seq": 1/'
    printf '%s\n' '{"v":1,"k":"eos","from":"t","count":2}'; } >"$TMP/dup.jsonl"
  run bash -c "json2frames '$TMP/dup.jsonl' | postprocess --examples 'file:$TMP/ex.frames' --allow-missing 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" postprocess
  grep -q "window 0 has logits twice: .* (example fox)" "$TMP/err"
}

@test "bad logits: a missing tensor or a class count unlike the labels is one error line, and downstream fails too" {
  printf '%s\n' '{"v":1,"k":"hello","from":"t","task":"classification","labels":["neg","pos","mixed"]}' \
    '{"v":1,"k":"logits","seq":0,"example_ids":["a"],"logits":{"dtype":"f32","shape":[1,2],"data":{"$bin":"AAAAAAAAgD8="}}}' \
    '{"v":1,"k":"eos","from":"t","count":1}' >"$TMP/l.jsonl"
  run bash -c "set -o pipefail; json2frames '$TMP/l.jsonl' | postprocess 2>'$TMP/err' | frames2json >/dev/null 2>'$TMP/err2'"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" postprocess
  grep -q "2 classes but the stream names 3 labels" "$TMP/err"
  grep -q "^frames2json: error:" "$TMP/err2"
  printf '%s\n' '{"v":1,"k":"hello","from":"t","task":"classification"}' \
    '{"v":1,"k":"logits","seq":0,"example_ids":["a"]}' '{"v":1,"k":"eos","from":"t","count":1}' >"$TMP/l.jsonl"
  run bash -c "json2frames '$TMP/l.jsonl' | postprocess 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" postprocess
  grep -q "logits" "$TMP/err"
  refute_sanitizer "$TMP/err"
}

@test "classification: softmax probabilities, argmax label, gold and loss carried, predictions file" {
  python3 - >"$TMP/l.jsonl" <<PY
$TENSOR_PY
import json
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
