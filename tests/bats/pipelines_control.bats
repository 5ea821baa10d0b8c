#!/usr/bin/env bats
# The manifests' training control and predictions on the embedded default: a test split
# without labels predicted (--do-predict) and evaluated without failing, the control options
# passed to train, a cased run served cased, the best epoch kept.
load test_helper

DEF="$BERTPIPE_TOP/pipelines/default"

# A copy of the default validation sentences without their label column: a test split.
unlabelled_tsv() {
  printf 'sentence\n' >"$TMP/test.tsv"
  sed -n '2,41p' "$DEF/sentiment-validation.tsv" | cut -f1 >>"$TMP/test.tsv"
}

# The default SQuAD validation set with every "answers" list removed.
unlabelled_squad() {
  python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
for a in d["data"]:
    for p in a["paragraphs"]:
        for q in p["qas"]:
            q.pop("answers", None)
json.dump(d, open(sys.argv[2], "w"))' "$DEF/squad-validation.json" "$TMP/squad-test.json"
}

@test "sst --do-predict on a test split without labels writes predictions, scores nothing, exits 0" {
  export BERTPIPE_BIN
  unlabelled_tsv
  run "$BERTPIPE_TOP/pipelines/sst" --epochs 1 --do-predict --test-data "$TMP/test.tsv" --out "$TMP/o"
  [ "$status" -eq 0 ]
  p=$TMP/o/predict_results.tsv
  [ "$(head -1 "$p")" = "$(printf 'index\tprediction\tp_negative\tp_positive')" ]
  [ "$(wc -l <"$p")" -eq 41 ]
  awk -F'\t' 'NR > 1 && !($2 == "negative" || $2 == "positive") { exit 1 }' "$p"
  # the score is the validation split's alone
  grep -q '"count": 400,' "$TMP/o/metrics.json"
  grep -qF '"do-predict": 1' "$TMP/o/run_config.json"
}

@test "sst --eval-split on an unlabelled split is predicted, not scored, and exits 0" {
  export BERTPIPE_BIN
  unlabelled_tsv
  run "$BERTPIPE_TOP/pipelines/sst" --epochs 1 --eval-data "$TMP/test.tsv" --eval-split test --out "$TMP/o"
  [ "$status" -eq 0 ]
  [[ "$output" == *"train: warning: the --eval stream has no labels"* ]]
  [[ "$output" == *"no labels in test, nothing scored"* ]]
  [ "$(wc -l <"$TMP/o/predictions.tsv")" -eq 41 ]
}

@test "squad --do-predict --test on questions without answers writes predictions and the n-best, exits 0" {
  export BERTPIPE_BIN
  unlabelled_squad
  run "$BERTPIPE_TOP/pipelines/squad" --epochs 1 --do-predict --test "$TMP/squad-test.json" --out "$TMP/q"
  [ "$status" -eq 0 ]
  python3 - "$TMP/q/predict_predictions.json" "$TMP/q/predict_nbest_predictions.json" <<'PY'
import json, sys
p, n = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert len(p) == 180 and set(p) == set(n), (len(p), len(n))
assert all(isinstance(v, str) for v in p.values())
assert all(e and "probability" in e[0] for e in n.values())
PY
  run "$BERTPIPE_TOP/pipelines/squad" --do-predict --out "$TMP/q2"
  [ "$status" -eq 2 ]
  [ "$output" = "squad: error: --do-predict needs --test PATH (the questions to answer) (see squad --help)" ]
}

# BERTPIPE_TAP stand-in: every frame, payloads whole, into $TMP/tap.jsonl (the pipeline asks for --brief).
full_tap() {
  printf '#!/bin/sh\nfor a in "$@"; do shift; [ "$a" = --brief ] || set -- "$@" "$a"; done\nexec "%s/tap" "$@" --log "%s/tap.jsonl"\n' \
    "$BERTPIPE_BIN" "$TMP" >"$TMP/full-tap"
  chmod +x "$TMP/full-tap"
  echo "$TMP/full-tap"
}

# The input_ids of every feature frame in a JSON-lines stream, one line each.
feature_ids() {
  python3 -c '
import base64, json, struct, sys
for line in open(sys.argv[1]):
    f = json.loads(line)
    if f.get("k") == "feature":
        raw = base64.b64decode(f["input_ids"]["data"]["$bin"])
        print(*struct.unpack("<%di" % (len(raw) // 4), raw))' "$1"
}

@test "a cased run is served cased: the folder says so, predict-sst tokenizes as training did, transformers' files check" {
  export BERTPIPE_BIN
  "$BERTPIPE_TOP/pipelines/sst" --cased --epochs 1 --out "$TMP/c" 2>"$TMP/err" || { cat "$TMP/err"; false; }
  run /usr/bin/python3 "$BERTPIPE_TOP/tests/reference/check_hf_folder.py" "$TMP/c/model" --cased --max-length 40
  echo "$output"
  [ "$status" -eq 0 ]
  sentence="The Movie was Wonderful and I loved It"
  echo "$sentence" | BERTPIPE_TAP_AFTER=tokenize BERTPIPE_TAP="$(full_tap)" "$BERTPIPE_TOP/pipelines/predict-sst" "$TMP/c/model" >"$TMP/p"
  [ "$(wc -l <"$TMP/p")" -eq 1 ]
  feature_ids "$TMP/tap.jsonl" >"$TMP/served"
  # what training's tokenize made of it (cased), and what an uncased one makes
  printf '%s\n' "$sentence" >"$TMP/s.txt"
  for casing in cased lowercase; do
    extract --format lines "$TMP/s.txt" | tokenize --vocab "$DEF/vocab.txt" --max-length 40 --"$casing" | frames2json >"$TMP/$casing.jsonl"
    feature_ids "$TMP/$casing.jsonl" >"$TMP/$casing.ids"
  done
  cat "$TMP/served" "$TMP/cased.ids" "$TMP/lowercase.ids"
  [ -s "$TMP/served" ]
  cmp "$TMP/served" "$TMP/cased.ids"
  ! cmp -s "$TMP/served" "$TMP/lowercase.ids"
}

@test "a cased SQuAD run is served cased by predict-squad" {
  export BERTPIPE_BIN
  "$BERTPIPE_TOP/pipelines/squad" --cased --epochs 1 --out "$TMP/q" 2>"$TMP/err" || { cat "$TMP/err"; false; }
  grep -qF '"do_lower_case": false' "$TMP/q/model/tokenizer_config.json"
  grep -qF '"model_max_length": 96' "$TMP/q/model/tokenizer_config.json"
  # EM/F1 during training, from the validation examples
  [ "$(grep '"scope":"eval"' "$TMP/q/train-metrics.jsonl" | grep -c '"exact_match":')" -eq 1 ]
  q="Where did Ilse Varga move to?" c="Ilse Varga was born in Ghent in 1902. Later Ilse moved to Porto."
  BERTPIPE_TAP_AFTER=tokenize BERTPIPE_TAP="$(full_tap)" "$BERTPIPE_TOP/pipelines/predict-squad" "$TMP/q/model" \
    --doc-stride 32 --question "$q" --context "$c" >"$TMP/a"
  grep -qP '^.+\t-?[0-9.]+$' "$TMP/a"
  feature_ids "$TMP/tap.jsonl" >"$TMP/served"
  for casing in cased lowercase; do
    extract --question "$q" --context "$c" | tokenize --vocab "$DEF/vocab.txt" --max-length 96 --doc-stride 32 --"$casing" |
      frames2json >"$TMP/$casing.jsonl"
    feature_ids "$TMP/$casing.jsonl" >"$TMP/$casing.ids"
  done
  [ -s "$TMP/served" ]
  cmp "$TMP/served" "$TMP/cased.ids"
  ! cmp -s "$TMP/served" "$TMP/lowercase.ids"
}


@test "sst passes the training control on to train, and the embedded default keeps 2 checkpoint folders" {
  export BERTPIPE_BIN
  BERTPIPE_TRAIN=$(recorder train) "$BERTPIPE_TOP/pipelines/sst" --epochs 3 --eval-every 20 --save-best macro-f1 \
    --patience 9 --out "$TMP/o" 2>"$TMP/err" || { cat "$TMP/err"; false; }
  t=$TMP/rec-train.argv
  [ "$(arg_of "$t" --eval-every)" = 20 ] && [ "$(arg_of "$t" --save-best)" = macro-f1 ] && [ "$(arg_of "$t" --patience)" = 9 ]
  [ "$(arg_of "$t" --save-total-limit)" = 2 ]
  grep -qF '"save-best": "macro-f1"' "$TMP/o/run_config.json"
  # 63 steps per epoch: evaluations at 20, 40, ..., 180; two folders left, the best among them
  [ "$(grep '"scope":"eval"' "$TMP/o/train-metrics.jsonl" | wc -l)" -eq 9 ]
  [ "$(ls -d "$TMP/o/model"/checkpoint-* | wc -l)" -le 2 ]
  best=$(sed -n 's/.*"best_global_step": \([0-9]*\).*/\1/p' "$TMP/o/model/trainer_state.json")
  cmp "$TMP/o/model/model.safetensors" "$TMP/o/model/checkpoint-$best/model.safetensors"
}
