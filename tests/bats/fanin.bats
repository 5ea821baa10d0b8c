#!/usr/bin/env bats
# Reproducible fan-in: the batch stream is a function of the data and the seed only. extract
# fans out to N tokenize workers over ipc, they fan in to one batch, and the stream batch
# writes (hello's pid aside) has the same sha256 as the single-worker pipe's, whatever the
# number of workers and the order their features arrive in.
load test_helper

DEFAULT="$BERTPIPE_TOP/pipelines/default"

# The batch stream as JSON lines without the hello's pid, hashed.
stream_sha() { # file
  frames2json --in "file:$1" | sed 's/"pid":[0-9]*,//' | sha256sum | cut -d' ' -f1
}

# fan N OUT TOKENIZE-ARGS -- BATCH-ARGS -- EXTRACT-ARGS: extract -> N tokenize -> batch -> OUT
fan() {
  local n=$1 out=$2; shift 2
  local -a tok=() bat=()
  while [ "$1" != -- ]; do tok+=("$1"); shift; done; shift
  while [ "$1" != -- ]; do bat+=("$1"); shift; done; shift
  local d="$TMP/fan$n" outs="" i
  mkdir -p "$d"
  for i in $(seq "$n"); do outs="$outs${outs:+,}ipc://$d/ex$i"; done
  BERTPIPE_TIMEOUT=120 batch --in "ipc://$d/features" --producers "$n" "${bat[@]}" --out "file:$out" 2>"$d/batch.err" &
  local batch_pid=$!
  for i in $(seq "$n"); do
    tokenize --vocab "$DEFAULT/vocab.txt" "${tok[@]}" --in "ipc://$d/ex$i" --out "ipc://$d/features" 2>"$d/tok$i.err" &
  done
  extract "$@" --out "$outs" 2>"$d/extract.err"
  wait "$batch_pid"
  wait
  refute_sanitizer "$d"/*.err
}

@test "classification: 1, 2 and 4 tokenize workers give the single-worker pipe's batch stream" {
  data=(--format csv --delimiter tab --label-map negative,positive --limit 300 "$DEFAULT/sentiment-train.tsv")
  batching=(--batch-size 8 --epochs 2 --seed 7)
  extract "${data[@]}" | tokenize --vocab "$DEFAULT/vocab.txt" | batch "${batching[@]}" --out "file:$TMP/pipe.batches"
  want=$(stream_sha "$TMP/pipe.batches")
  for n in 1 2 4; do
    fan "$n" "$TMP/fan$n.batches" -- "${batching[@]}" -- "${data[@]}"
    [ "$(stream_sha "$TMP/fan$n.batches")" = "$want" ] || { echo "$n workers: another stream" >&2; return 1; }
  done
  # a different seed gives a different stream: the hash says something
  extract "${data[@]}" | tokenize --vocab "$DEFAULT/vocab.txt" | batch --batch-size 8 --epochs 2 --seed 8 --out "file:$TMP/other.batches"
  [ "$(stream_sha "$TMP/other.batches")" != "$want" ]
}

@test "QA: 1, 2 and 4 workers give the single-worker stream, and an example's windows stay together in order" {
  windows=(--max-length 64 --doc-stride 16)
  extract "$DEFAULT/squad-train.json" | tokenize --vocab "$DEFAULT/vocab.txt" "${windows[@]}" \
    | batch --batch-size 6 --epochs 2 --seed 3 --out "file:$TMP/pipe.batches"
  want=$(stream_sha "$TMP/pipe.batches")
  for n in 1 2 4; do
    fan "$n" "$TMP/fan$n.batches" "${windows[@]}" -- --batch-size 6 --epochs 2 --seed 3 -- "$DEFAULT/squad-train.json"
    [ "$(stream_sha "$TMP/fan$n.batches")" = "$want" ] || { echo "$n workers: another stream" >&2; return 1; }
  done
  # Unshuffled (as evaluation batches), 4 workers give extract's order: each example's
  # windows 0, 1, 2, ... back to back, and the examples in file order.
  fan 4 "$TMP/eval.batches" "${windows[@]}" -- --no-shuffle --batch-size 5 -- "$DEFAULT/squad-train.json"
  frames2json --in "file:$TMP/eval.batches" | python3 -c '
import base64, json, struct, sys
rows = []
for line in sys.stdin:
    f = json.loads(line)
    if f["k"] != "batch": continue
    w = f["windows"]
    wins = struct.unpack("<%di" % w["shape"][0], base64.b64decode(w["data"]["$bin"]))
    rows += zip(f["example_ids"], wins)
ids = [q["id"] for d in json.load(open(sys.argv[1]))["data"] for p in d["paragraphs"] for q in p["qas"]]
order = []
for example, window in rows:
    if window == 0: order.append(example)
    else: assert order[-1] == example and window == prev + 1, (example, window)
    prev = window
assert order == ids, "examples not in file order"
assert any(w > 0 for _, w in rows), "no example has a second window: the test shows nothing"
' "$DEFAULT/squad-train.json"
}

@test "features without example_seq keep their arrival order; with several producers a warning says so" {
  printf '%s\n' \
    '{"v":1,"k":"hello","from":"json2frames","pid":1,"task":"classification"}' \
    '{"v":1,"k":"feature","seq":0,"example_id":"b","window":0,"input_ids":{"dtype":"i32","shape":[1],"data":{"$bin":"ZQAAAA=="}},"token_type_ids":{"dtype":"i32","shape":[1],"data":{"$bin":"AAAAAA=="}},"attention_mask":{"dtype":"i32","shape":[1],"data":{"$bin":"AQAAAA=="}},"label":1}' \
    '{"v":1,"k":"feature","seq":1,"example_id":"a","window":0,"input_ids":{"dtype":"i32","shape":[1],"data":{"$bin":"ZQAAAA=="}},"token_type_ids":{"dtype":"i32","shape":[1],"data":{"$bin":"AAAAAA=="}},"attention_mask":{"dtype":"i32","shape":[1],"data":{"$bin":"AQAAAA=="}},"label":0}' \
    '{"v":1,"k":"eos","from":"json2frames","count":2}' >"$TMP/old.jsonl"
  json2frames "$TMP/old.jsonl" | batch --no-shuffle --batch-size 2 2>"$TMP/err" | frames2json | grep -q '"example_ids":\["b","a"\]'
  [ ! -s "$TMP/err" ]
  BERTPIPE_TIMEOUT=60 batch --in "ipc://$TMP/f" --producers 2 --out "file:$TMP/two.batches" 2>"$TMP/err" &
  json2frames "$TMP/old.jsonl" --out "ipc://$TMP/f" &
  json2frames "$TMP/old.jsonl" --out "ipc://$TMP/f"
  wait
  [ "$(grep -c 'carry no example_seq' "$TMP/err")" -eq 1 ]
  grep -q '4 of 4 features carry no example_seq' "$TMP/err"
  refute_sanitizer "$TMP/err"
}
