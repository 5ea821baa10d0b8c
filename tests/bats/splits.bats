#!/usr/bin/env bats
# Honest splits through the pipelines: a seeded hold-out of any format's train split, and a
# refusal (one line, status 2) to evaluate on examples the model trains on, unless
# --allow-overlap. The examples each split read are recorded in OUT/*.examples.
load test_helper

DEFAULT="$BERTPIPE_TOP/pipelines/default"
FIX="$BERTPIPE_TOP/tests/fixtures/datasets"

setup() {
  TMP=$(mktemp -d "${BATS_TMPDIR:-/tmp}/bp.XXXXXX")
  export BERTPIPE_BIN
  # the classic notebooks' tweets CSV: labels -1..2, made up here
  python3 - "$TMP/tweets.csv" <<'PY'
import random, sys
r = random.Random(5)
words = {-1: "awful dull", 0: "bad poor", 1: "fine good", 2: "great lovely"}
with open(sys.argv[1], "w") as f:
    f.write("tweet,sentiment\n")
    for i in range(100):
        label = (i * 7) % 4 - 1
        f.write('"the film was %s, said %d",%d\n' % (r.choice(words[label].split()), i, label))
PY
}

tiny=(--vocab "$DEFAULT/vocab.txt" --epochs 1 --max-length 16 --batch-size 16 --no-plot)
cols=(--text-column tweet --label-column sentiment --label-map -1,0,1,2)
ids() { frames2json --in "file:$1" | sed -n 's/.*"k":"example","seq":[0-9]*,"example_id":"\([^"]*\)".*/\1/p' | sort; }

@test "sst on one CSV with --validation-ratio 0.2 --seed 1234: disjoint train and validation ids, 80/20" {
  "$BERTPIPE_TOP/pipelines/sst" --data "$TMP/tweets.csv" "${cols[@]}" "${tiny[@]}" --validation-ratio 0.2 --seed 1234 \
    --out "$TMP/o" 2>"$TMP/err" || { cat "$TMP/err"; false; }
  ids "$TMP/o/train.examples" >"$TMP/train"
  ids "$TMP/o/validation.examples" >"$TMP/validation"
  [ "$(wc -l <"$TMP/train")" -eq 80 ]
  [ "$(wc -l <"$TMP/validation")" -eq 20 ]
  [ -z "$(comm -12 "$TMP/train" "$TMP/validation")" ]
  [ "$(sort -u "$TMP/train" "$TMP/validation" | wc -l)" -eq 100 ]
  grep -q "validation examples checked: none of the 20 is a training example" "$TMP/err"
  # the evaluation scored those 20
  grep -q '"count": 20,' "$TMP/o/metrics.json"
  refute_sanitizer "$TMP/err"
}

@test "sst on one CSV without a hold-out refuses to evaluate on the rows it trains on, saying why" {
  run "$BERTPIPE_TOP/pipelines/sst" --data "$TMP/tweets.csv" "${cols[@]}" "${tiny[@]}" --out "$TMP/o"
  [ "$status" -eq 2 ]
  line=$(grep -v '^sst: validation stream' <<<"$output")
  [ "$(wc -l <<<"$line")" -eq 1 ]
  [[ $line == "sst: error: refusing to evaluate on training examples: 100 of the 100 validation examples are training examples too (ids 0, 1, 10, ...): $TMP/tweets.csv holds one split, read whole by both (hold a validation side out with --validation-ratio R, or give another file; --allow-overlap to do it anyway)" ]]
  [ ! -e "$TMP/o/model" ]
  # --eval-data naming the same file is the same source
  run "$BERTPIPE_TOP/pipelines/sst" --data "$TMP/tweets.csv" --eval-data "$TMP/tweets.csv" "${cols[@]}" "${tiny[@]}" --out "$TMP/o2"
  [ "$status" -eq 2 ]
  [[ $output == *"refusing to evaluate on training examples"* ]]
}

@test "sst --allow-overlap evaluates on the training rows anyway, with a warning" {
  "$BERTPIPE_TOP/pipelines/sst" --data "$TMP/tweets.csv" "${cols[@]}" "${tiny[@]}" --allow-overlap --out "$TMP/o" 2>"$TMP/err"
  grep -q "sst: warning: evaluating on training examples (--allow-overlap): 100 of the 100 validation examples" "$TMP/err"
  [ -s "$TMP/o/metrics.json" ]
}

@test "sst --test-ratio --stratify: three disjoint sides with each label's share, the test side scored" {
  "$BERTPIPE_TOP/pipelines/sst" --data "$TMP/tweets.csv" "${cols[@]}" "${tiny[@]}" --validation-ratio 0.2 \
    --test-ratio 0.2 --stratify --seed 3 --out "$TMP/o" 2>"$TMP/err" || { cat "$TMP/err"; false; }
  for s in train validation test; do ids "$TMP/o/$s.examples" >"$TMP/$s"; done
  [ "$(wc -l <"$TMP/train")" -eq 60 ]
  [ "$(wc -l <"$TMP/validation")" -eq 20 ]
  [ "$(wc -l <"$TMP/test")" -eq 20 ]
  [ "$(sort -u "$TMP/train" "$TMP/validation" "$TMP/test" | wc -l)" -eq 100 ]
  # 25 of each label: 5 of each on each held-out side
  for s in validation test; do
    [ "$(frames2json --in "file:$TMP/o/$s.examples" | grep -o '"label":[0-9]' | sort | uniq -c | awk '{print $1}' | sort -u)" = 5 ]
  done
  grep -q '"count": 20,' "$TMP/o/test_metrics.json"
  [ -s "$TMP/o/test_predictions.tsv" ]
  grep -q "on validation, .* on test" "$TMP/err"
}

@test "sst on IMDB: a validation side held out of train, and IMDB's own test split, which needs no comparison" {
  "$BERTPIPE_TOP/pipelines/sst" --data "$FIX/aclImdb" --format imdb "${tiny[@]}" --validation-ratio 0.34 --seed 1 \
    --test-split test --out "$TMP/o" 2>"$TMP/err" || { cat "$TMP/err"; false; }
  [ "$(ids "$TMP/o/validation.examples" | wc -l)" -eq 2 ]
  [ "$(ids "$TMP/o/train.examples" | wc -l)" -eq 1 ]
  [ "$(ids "$TMP/o/validation.examples" | grep -c '^train/')" -eq 2 ]
  [ "$(ids "$TMP/o/test.examples" | grep -c '^test/')" -eq 2 ]
  frames2json --in "file:$TMP/o/validation.examples" | head -1 | grep -q '"split_origin":"held-out","split_part":"train"'
  grep -q "validation examples checked: none of the 2" "$TMP/err"
  run grep -q "test examples checked" "$TMP/err"
  [ "$status" -eq 1 ]
}

@test "sst on SST trees: the train and dev members of one archive are told apart by their hellos" {
  "$BERTPIPE_TOP/pipelines/sst" --data "$FIX/sst_trees" --format sst-trees "${tiny[@]}" --eval-split dev \
    --out "$TMP/o" 2>"$TMP/err" || { cat "$TMP/err"; false; }
  run grep -q "refusing" "$TMP/err"
  [ "$status" -eq 1 ]
  # the dev ids are tree numbers like the train ones: only the members tell them apart
  [ -n "$(comm -12 <(ids "$TMP/o/train.examples") <(ids "$TMP/o/validation.examples"))" ]
  # the train split itself as validation is refused
  run "$BERTPIPE_TOP/pipelines/sst" --data "$FIX/sst_trees" --format sst-trees "${tiny[@]}" --eval-split train --out "$TMP/o2"
  [ "$status" -eq 2 ]
  [[ $output == *"5 of the 5 validation examples are training examples too (ids 0, 1, 2, ...): both read the train split of $FIX/sst_trees (pick another split; --allow-overlap to do it anyway)"* ]]
}

@test "squad: one file for --train and --eval is refused; --validation-ratio and article ranges are not" {
  q=(--vocab "$DEFAULT/vocab.txt" --epochs 1 --max-length 64 --doc-stride 16 --max-steps 2 --no-plot)
  run "$BERTPIPE_TOP/pipelines/squad" --train "$DEFAULT/squad-train.json" --eval "$DEFAULT/squad-train.json" "${q[@]}" --out "$TMP/a"
  [ "$status" -eq 2 ]
  [[ $output == *"squad: error: refusing to evaluate on training examples: 780 of the 780 validation examples are training examples too"* ]]
  "$BERTPIPE_TOP/pipelines/squad" --train "$DEFAULT/squad-train.json" --validation-ratio 0.1 --test-ratio 0.05 "${q[@]}" \
    --out "$TMP/b" 2>"$TMP/err" || { cat "$TMP/err"; false; }
  [ "$(ids "$TMP/b/validation.examples" | wc -l)" -eq 78 ]
  [ "$(ids "$TMP/b/test.examples" | wc -l)" -eq 39 ]
  [ "$(ids "$TMP/b/train.examples" | wc -l)" -eq 663 ]
  grep -q '"total":39,' "$TMP/b/test_metrics.json"
  [ -s "$TMP/b/test_predictions.json" ]
  "$BERTPIPE_TOP/pipelines/squad" --train "$DEFAULT/squad-train.json" --eval "$DEFAULT/squad-train.json" \
    --train-articles 0-9 --eval-articles 10-12 "${q[@]}" --out "$TMP/c" 2>"$TMP/err" || { cat "$TMP/err"; false; }
  refute_sanitizer "$TMP/err"
}
