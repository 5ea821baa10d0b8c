#!/usr/bin/env bats
# batch: shuffling, epochs, padding, partial batches and spilling, on synthetic features.
load test_helper

# N features of lengths 3..6 with labels, as JSON lines.
features() {
  python3 - "$1" >"$TMP/feat.jsonl" <<'PY'
import base64, json, struct, sys
n = int(sys.argv[1])
def t(vals):
    return {"dtype": "i32", "shape": [len(vals)], "data": {"$bin": base64.b64encode(struct.pack("<%di" % len(vals), *vals)).decode()}}
print(json.dumps({"v": 1, "k": "hello", "from": "t", "task": "classification", "labels": ["neg", "pos"], "max_length": 8}, separators=(",", ":")))
for i in range(n):
    k = 3 + i % 4
    ids = [101] + [1000 + i] * (k - 2) + [102]
    print(json.dumps({"v": 1, "k": "feature", "seq": i, "example_id": "e%d" % i, "window": 0, "input_ids": t(ids),
                      "token_type_ids": t([0] * k), "attention_mask": t([1] * k), "label": i % 2}, separators=(",", ":")))
print(json.dumps({"v": 1, "k": "eos", "from": "t", "count": n}, separators=(",", ":")))
PY
}

# example ids of every batch, one batch per line; "EPOCH n" for epoch frames
ids_of() { python3 -c '
import json, sys
for line in sys.stdin:
    f = json.loads(line)
    if f["k"] == "batch": print(" ".join(f["example_ids"]), f["input_ids"]["shape"])
    if f["k"] == "epoch": print("EPOCH", f["epoch"])
'; }

@test "every feature appears once per epoch, the last partial batch is kept, epoch frames follow" {
  features 7
  json2frames "$TMP/feat.jsonl" | batch --batch-size 3 --epochs 2 --seed 5 | frames2json | ids_of >"$TMP/b"
  [ "$(grep -c EPOCH "$TMP/b")" -eq 2 ]
  [ "$(sed -n 4p "$TMP/b")" = "EPOCH 1" ]
  for e in 1 2; do
    awk -v e=$e '/EPOCH/{n++; next} n==e-1{for(i=1;i<NF-1;i++) print $i}' "$TMP/b" | sed 's/\[.*//' | grep . | sort >"$TMP/ids$e"
    [ "$(wc -l <"$TMP/ids$e")" -eq 7 ]
    [ "$(sort -u "$TMP/ids$e" | wc -l)" -eq 7 ]
  done
  # the two epochs are shuffled differently
  ! cmp -s <(sed -n 1,3p "$TMP/b") <(sed -n 5,7p "$TMP/b")
}

@test "the same seed gives the same order; another seed another" {
  features 20
  json2frames "$TMP/feat.jsonl" | batch --seed 1 | frames2json | ids_of >"$TMP/a"
  json2frames "$TMP/feat.jsonl" | batch --seed 1 | frames2json | ids_of >"$TMP/b"
  json2frames "$TMP/feat.jsonl" | batch --seed 2 | frames2json | ids_of >"$TMP/c"
  cmp "$TMP/a" "$TMP/b"
  ! cmp -s "$TMP/a" "$TMP/c"
}

@test "--no-shuffle keeps input order; --pad max pads every batch to max length" {
  features 5
  json2frames "$TMP/feat.jsonl" | batch --no-shuffle --batch-size 2 --pad max | frames2json | ids_of >"$TMP/b"
  [ "$(sed -n 1p "$TMP/b")" = "e0 e1 [2, 8]" ]
  [ "$(sed -n 3p "$TMP/b")" = "e4 [1, 8]" ]
}

@test "padding to the longest pads ids with the pad id and masks with 0" {
  features 2
  json2frames "$TMP/feat.jsonl" | batch --no-shuffle --batch-size 2 | frames2json >"$TMP/b.jsonl"
  python3 - "$TMP/b.jsonl" <<'PY'
import base64, json, struct, sys
f = [json.loads(l) for l in open(sys.argv[1])][1]
ids = struct.unpack("<8i", base64.b64decode(f["input_ids"]["data"]["$bin"]))
mask = struct.unpack("<8i", base64.b64decode(f["attention_mask"]["data"]["$bin"]))
assert f["input_ids"]["shape"] == [2, 4], f["input_ids"]["shape"]
assert ids == (101, 1000, 102, 0, 101, 1001, 1001, 102), ids
assert mask == (1, 1, 1, 0, 1, 1, 1, 1), mask
PY
}

@test "past --memory-limit features spill to disk and the batches are the same" {
  features 300
  json2frames "$TMP/feat.jsonl" | batch --seed 3 | frames2json | ids_of >"$TMP/mem"
  json2frames "$TMP/feat.jsonl" | BERTPIPE_QUIET=0 batch --seed 3 --memory-limit 4K 2>"$TMP/err" | frames2json | ids_of >"$TMP/spill"
  grep -q "spilling" "$TMP/err"
  cmp "$TMP/mem" "$TMP/spill"
}

@test "length bucketing groups similar lengths and still covers every feature" {
  features 40
  json2frames "$TMP/feat.jsonl" | batch --batch-size 4 --bucket 5 | frames2json | ids_of >"$TMP/b"
  [ "$(grep -v EPOCH "$TMP/b" | sed 's/\[.*//' | tr ' ' '\n' | grep . | sort -u | wc -l)" -eq 40 ]
  # sorted runs make batches of one length: no padding in most of them
  [ "$(grep -c '\[4, ' "$TMP/b")" -ge 8 ]
}

@test "a frame that is not a feature is refused with one line" {
  printf '{"v":1,"k":"hello","from":"t"}\n{"v":1,"k":"example","seq":0,"example_id":"a","text":"x"}\n{"v":1,"k":"eos","from":"t","count":1}\n' >"$TMP/x.jsonl"
  run bash -c "json2frames '$TMP/x.jsonl' | batch 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" batch
  grep -q "batch takes feature frames, got example" "$TMP/err"
}
