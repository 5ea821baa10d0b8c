#!/usr/bin/env bats
# train's control of a run: when it evaluates (each epoch, --eval-every), what it reports (the
# epoch summary; SQuAD EM/F1 during training, equal to eval | postprocess | score), when it
# stops (--patience), what it keeps (--save-best, checkpoint-N folders, --save-total-limit) and
# what a saved folder holds. Inputs come from the embedded default data set.
load test_helper

DEF="$BERTPIPE_TOP/pipelines/default"
VOCAB="$DEF/vocab.txt"
EVAL="$BERTPIPE_BIN/eval"

# classification batches from a default split: N examples, batch size, epochs, batch args...
sst_batches() { # split N batch-size epochs [batch args...]
  local split=$1 n=$2 bs=$3 ep=$4; shift 4
  extract --format csv --delimiter tab --text-column sentence --label-column label --label-map negative,positive \
    --limit "$n" "$DEF/sentiment-$split.tsv" | tokenize --vocab "$VOCAB" --max-length 40 |
    batch --batch-size "$bs" --epochs "$ep" "$@"
}

# QA: the validation examples and batches of the default set into $TMP, and a training stream.
squad_validation() {
  extract --format squad "$DEF/squad-validation.json" --out "file:$TMP/val.examples"
  tokenize --in "file:$TMP/val.examples" --vocab "$VOCAB" --max-length 96 --doc-stride 32 |
    batch --no-shuffle --batch-size 32 --out "file:$TMP/val.batches"
}
squad_batches() { # epochs
  extract --format squad "$DEF/squad-train.json" | tokenize --vocab "$VOCAB" --max-length 96 --doc-stride 32 |
    batch --batch-size 16 --epochs "$1"
}

# metric frames of one scope from a recorded metric stream, as JSON lines
scope() { frames2json --in "file:$1" | grep "\"scope\":\"$2\""; }
# the value of KEY in a JSON line
field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p"; }

@test "an --eval stream with larger batches than training's is planned for, not refused" {
  sst_batches validation 100 64 1 --no-shuffle --out "file:$TMP/val.batches"
  sst_batches train 64 8 1 | train --preset tiny --vocab "$VOCAB" --eval "file:$TMP/val.batches" \
    --out "file:$TMP/m.frames" 2>"$TMP/err" || { cat "$TMP/err"; false; }
  scope "$TMP/m.frames" eval | grep -q '"examples":100'
}

@test "an unlabelled --eval stream (a test split) is not scored; training goes on and exits 0" {
  printf 'sentence\n' >"$TMP/test.tsv"
  sed -n '2,41p' "$DEF/sentiment-validation.tsv" | cut -f1 >>"$TMP/test.tsv"
  extract --format csv --delimiter tab --text-column sentence "$TMP/test.tsv" | tokenize --vocab "$VOCAB" --max-length 40 |
    batch --no-shuffle --batch-size 16 --out "file:$TMP/test.batches"
  sst_batches train 64 8 1 | train --preset tiny --vocab "$VOCAB" --eval "file:$TMP/test.batches" \
    --out "file:$TMP/m.frames" 2>"$TMP/err"
  grep -q "warning: the --eval stream has no labels (a test split?)" "$TMP/err"
  ! scope "$TMP/m.frames" eval
  run train --preset tiny --vocab "$VOCAB" --eval "file:$TMP/test.batches" --save-best accuracy --in "file:$TMP/test.batches"
  [ "$status" -eq 2 ]
  [[ "$output" == *"train: error: --save-best accuracy: the evaluation cannot give it (the --eval stream has no labels)"* ]]
}

@test "each epoch ends with a summary: mean train loss, train accuracy, epoch time, eval time, sequences/s" {
  sst_batches validation 100 32 1 --no-shuffle --out "file:$TMP/val.batches"
  sst_batches train 256 32 3 | BERTPIPE_QUIET=0 train --preset tiny --lr 2e-3 --vocab "$VOCAB" \
    --eval "file:$TMP/val.batches" --out "file:$TMP/m.frames" 2>"$TMP/err"
  [ "$(scope "$TMP/m.frames" epoch | wc -l)" -eq 3 ]
  for k in train_loss train_accuracy epoch_time eval_time seq_per_s; do
    scope "$TMP/m.frames" epoch | grep -q "\"$k\":" || { echo "no $k"; false; }
  done
  # the mean train loss is the mean of the epoch's step losses (one batch per step)
  mean=$(scope "$TMP/m.frames" train | awk -F'"loss":' '$0 ~ /"epoch":2,/ { split($2, v, ","); s += v[1]; n++ } END { printf "%.6f", s / n }')
  got=$(scope "$TMP/m.frames" epoch | grep '"epoch":2,' | field train_loss)
  awk -v a="$mean" -v b="$got" 'BEGIN { d = a - b; exit !(d < 1e-5 && d > -1e-5) }'
  grep -qE "train: epoch 3 done at step 24: train loss [0-9.]+ accuracy [0-9.]+, [0-9.]+ s \(eval [0-9.]+ s\), [0-9]+ sequences/s" "$TMP/err"
}

@test "--eval-every N evaluates every N optimizer steps instead of at each epoch end" {
  sst_batches validation 50 25 1 --no-shuffle --out "file:$TMP/val.batches"
  sst_batches train 160 16 2 | train --preset tiny --vocab "$VOCAB" --eval "file:$TMP/val.batches" --eval-every 4 \
    --out "file:$TMP/m.frames"
  # 10 steps per epoch, 20 in all: evaluations at steps 4, 8, 12, 16, 20
  [ "$(scope "$TMP/m.frames" eval | field step | tr '\n' ' ')" = "4 8 12 16 20 " ]
}

@test "--patience N stops after N evaluations without a better metric" {
  sst_batches validation 50 25 1 --no-shuffle --out "file:$TMP/val.batches"
  # lr 0: the weights never change, so no evaluation after the first is better
  sst_batches train 320 16 1 | BERTPIPE_QUIET=0 train --preset tiny --vocab "$VOCAB" --lr 0 --eval "file:$TMP/val.batches" \
    --eval-every 2 --patience 3 --out "file:$TMP/m.frames" 2>"$TMP/err"
  [ "$(scope "$TMP/m.frames" eval | field step | tr '\n' ' ')" = "2 4 6 8 " ]
  [ "$(scope "$TMP/m.frames" train | wc -l)" -eq 8 ]
  grep -q "early stopping at step 8: 3 evaluations without a better loss (best [0-9.]* at step 2)" "$TMP/err"
}

@test "SQuAD: EM/F1 at every epoch, and the last equal eval | postprocess | score on the saved weights" {
  squad_validation
  squad_batches 3 | train --preset tiny --lr 1e-3 --vocab "$VOCAB" --eval "file:$TMP/val.batches" \
    --eval-examples "file:$TMP/val.examples" --save "$TMP/model" --out "file:$TMP/m.frames"
  [ "$(scope "$TMP/m.frames" eval | grep -c '"exact_match":')" -eq 3 ]
  [ "$(scope "$TMP/m.frames" eval | grep -c '"f1":')" -eq 3 ]
  em=$(scope "$TMP/m.frames" eval | tail -1 | field exact_match)
  f1=$(scope "$TMP/m.frames" eval | tail -1 | field f1)
  "$EVAL" --checkpoint "$TMP/model" --in "file:$TMP/val.batches" | postprocess --examples "file:$TMP/val.examples" |
    score --json "$TMP/score.json"
  sem=$(sed 's/.*"exact_match":\([^,]*\).*/\1/' "$TMP/score.json")
  sf1=$(sed 's/.*"f1":\([^,]*\).*/\1/' "$TMP/score.json")
  echo "train: EM $em F1 $f1; stages: EM $sem F1 $sf1"
  awk -v a="$em" -v b="$sem" -v c="$f1" -v d="$sf1" 'BEGIN { x = a - b; y = c - d; exit !(a > 0 && x * x < 1e-20 && y * y < 1e-20) }'
}

@test "--ignore-mismatched-sizes starts a new head on a checkpoint of another label count, naming the tensors" {
  sst_batches train 64 32 1 | train --preset tiny --vocab "$VOCAB" --save "$TMP/two" --max-steps 1
  # three classes: every third sentence becomes "neutral"
  awk -F'\t' 'NR == 1 { print; next } NR <= 65 { print $1 "\t" (NR % 3 ? $2 : "neutral") }' "$DEF/sentiment-train.tsv" >"$TMP/three.tsv"
  extract --format csv --delimiter tab --text-column sentence --label-column label --label-map negative,neutral,positive \
    "$TMP/three.tsv" | tokenize --vocab "$VOCAB" --max-length 40 | batch --batch-size 32 --out "file:$TMP/three.batches"
  run train --checkpoint "$TMP/two" --in "file:$TMP/three.batches"
  [ "$status" -eq 1 ]
  [[ "$output" == *"train: error: size mismatch for classifier.weight: checkpoint has shape [2, 128], the model expects [3, 128]"* ]]
  train --checkpoint "$TMP/two" --ignore-mismatched-sizes --in "file:$TMP/three.batches" --save "$TMP/three" \
    --out "file:$TMP/m.frames" 2>"$TMP/err"
  grep -q "newly initialized because the shapes did not match:" "$TMP/err"
  grep -qxF -- "- classifier.weight: found shape torch.Size([2, 128]) in the checkpoint and torch.Size([3, 128]) in the model instantiated" "$TMP/err"
  grep -qxF -- "- classifier.bias: found shape torch.Size([2]) in the checkpoint and torch.Size([3]) in the model instantiated" "$TMP/err"
  # the encoder did load: only the head is named
  [ "$(grep -c '^- ' "$TMP/err")" -eq 2 ]
  grep -q '"neutral"' "$TMP/three/config.json"
}

@test "--save lays out checkpoint-STEP folders as the Trainer does; the top is a folder transformers loads" {
  sst_batches validation 100 50 1 --no-shuffle --out "file:$TMP/val.batches"
  sst_batches train 256 32 2 | train --preset tiny --lr 2e-3 --vocab "$VOCAB" --dropout 0.2 --eval "file:$TMP/val.batches" \
    --save "$TMP/run" >/dev/null
  for step in 8 16; do
    for f in model.safetensors config.json vocab.txt tokenizer_config.json special_tokens_map.json trainer_state.json \
             optimizer.safetensors; do
      [ -s "$TMP/run/checkpoint-$step/$f" ] || { echo "no checkpoint-$step/$f"; false; }
    done
  done
  # the top: the model to use, without optimizer state; its weights are the last checkpoint's
  [ ! -e "$TMP/run/optimizer.safetensors" ]
  cmp "$TMP/run/model.safetensors" "$TMP/run/checkpoint-16/model.safetensors"
  run /usr/bin/python3 "$BERTPIPE_TOP/tests/reference/check_hf_folder.py" "$TMP/run" --uncased --max-length 40
  echo "$output"
  [ "$status" -eq 0 ]
  # floats in their shortest exact form
  grep -qF '"hidden_dropout_prob": 0.2,' "$TMP/run/config.json"
  grep -qF '"layer_norm_eps": 1e-12,' "$TMP/run/config.json"
  grep -qF '"initializer_range": 0.02,' "$TMP/run/config.json"
  # trainer_state.json: every step, both evaluations and epochs in the log history
  python3 - "$TMP/run/trainer_state.json" "$TMP/run/checkpoint-8/trainer_state.json" <<'PY'
import json, sys
top, first = (json.load(open(p)) for p in sys.argv[1:3])
log = top["log_history"]
train = [e for e in log if "loss" in e]
evals = [e for e in log if "eval_accuracy" in e]
epochs = [e for e in log if "train_loss" in e]
assert top["global_step"] == 16 and top["max_steps"] == 16 and top["epoch"] == 2.0, top
assert [e["step"] for e in train] == list(range(1, 17)), [e["step"] for e in train]
assert all({"learning_rate", "grad_norm", "epoch"} <= set(e) for e in train)
assert [e["step"] for e in evals] == [8, 16] and all("eval_loss" in e and "eval_runtime" in e for e in evals)
assert [e["step"] for e in epochs] == [8, 16] and all("train_accuracy" in e for e in epochs)
assert first["global_step"] == 8 and max(e["step"] for e in first["log_history"]) == 8, first["global_step"]
PY
}

# A training stream whose metric peaks at epoch 1: epoch 1 the default sentences with their
# labels, epoch 2 the same with the labels swapped (--label-map positive,negative).
peaked_stream() {
  for map in negative,positive positive,negative; do
    extract --format csv --delimiter tab --text-column sentence --label-map "$map" --limit 2000 "$DEF/sentiment-train.tsv" |
      tokenize --vocab "$VOCAB" --max-length 40 | batch --batch-size 32 --seed 7 | frames2json >"$TMP/$map.jsonl"
  done
  python3 - "$TMP/negative,positive.jsonl" "$TMP/positive,negative.jsonl" >"$TMP/peaked.jsonl" <<'PY'
import json, sys
seq, out = 0, []
for epoch, path in enumerate(sys.argv[1:3], 1):
    for f in map(json.loads, open(path)):
        if f["k"] == "hello" and epoch == 1:
            f["epochs"] = 2
            out.append(f)
        elif f["k"] in ("batch", "epoch"):
            f["seq"], f["epoch"] = seq, epoch
            seq += 1
            out.append(f)
out.append({"v": 1, "k": "eos", "from": "test", "count": seq})
print("\n".join(json.dumps(f) for f in out))
PY
  json2frames "$TMP/peaked.jsonl"
}

@test "--save-best keeps the best epoch of a run whose metric peaks before the last; --save-total-limit rotates the rest" {
  sst_batches validation 200 50 1 --no-shuffle --out "file:$TMP/val.batches"
  peaked_stream | train --preset tiny --lr 2e-3 --vocab "$VOCAB" --eval "file:$TMP/val.batches" --save "$TMP/run" \
    --save-best accuracy --save-every 20 --save-total-limit 2 --out "file:$TMP/m.frames"
  acc1=$(scope "$TMP/m.frames" eval | grep '"step":63,' | field accuracy)
  acc2=$(scope "$TMP/m.frames" eval | grep '"step":126,' | field accuracy)
  echo "accuracy: epoch 1 $acc1, epoch 2 $acc2"
  awk -v a="$acc1" -v b="$acc2" 'BEGIN { exit !(a > b) }'
  # the best (63) and the latest (126) are kept; the saves at 20, 40, 60, 80, 100, 120 rotated away
  [ "$(cd "$TMP/run" && ls -d checkpoint-* | sort -t- -k2 -n | tr '\n' ' ')" = "checkpoint-63 checkpoint-126 " ]
  cmp "$TMP/run/model.safetensors" "$TMP/run/checkpoint-63/model.safetensors"
  grep -qF "\"best_model_checkpoint\": \"$TMP/run/checkpoint-63\"" "$TMP/run/trainer_state.json"
  # the top is what a user gets: evaluated by the stages, it scores epoch 1's accuracy
  "$EVAL" --checkpoint "$TMP/run" --in "file:$TMP/val.batches" | postprocess | score --json "$TMP/score.json"
  [ "$(sed -n 's/.*"accuracy": *\([0-9.]*\).*/\1/p' "$TMP/score.json")" = "$acc1" ]
}

@test "--resume of a run folder takes its latest checkpoint and goes on with its best and its patience" {
  sst_batches validation 50 25 1 --no-shuffle --out "file:$TMP/val.batches"
  sst_batches train 320 16 1 --out "file:$TMP/train.batches"
  common=(--vocab "$VOCAB" --lr 0 --eval "file:$TMP/val.batches" --eval-every 2 --patience 3 --save-every 2)
  # part 1 ends at step 4 (evaluations at 2 and 4: one without a better loss); part 2 resumes the folder
  train --in "file:$TMP/train.batches" --preset tiny "${common[@]}" --max-steps 4 --save "$TMP/run" --out "file:$TMP/a.frames"
  BERTPIPE_QUIET=0 train --in "file:$TMP/train.batches" --resume "$TMP/run" "${common[@]}" --save "$TMP/run" \
    --out "file:$TMP/b.frames" 2>"$TMP/err"
  grep -q "resuming at step 4" "$TMP/err"
  # as the uninterrupted run: evaluations at 6 and 8, then the stop
  [ "$(scope "$TMP/b.frames" eval | field step | tr '\n' ' ')" = "6 8 " ]
  grep -q "early stopping at step 8: 3 evaluations without a better loss (best [0-9.]* at step 2)" "$TMP/err"
  python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
assert [e["step"] for e in s["log_history"] if "eval_loss" in e] == [2, 4, 6, 8], s["log_history"]
assert s["best_global_step"] == 2 and s["stateful_callbacks"]["EarlyStoppingCallback"]["attributes"]["early_stopping_patience_counter"] == 3
' "$TMP/run/trainer_state.json"
}
