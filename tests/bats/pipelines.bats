#!/usr/bin/env bats
# The pipeline manifests on the embedded default: same results over ipc and pipes and with a
# tap spliced in, a killed stage named, and predictions on sentences and questions of ours.
load test_helper

sst() { "$BERTPIPE_TOP/pipelines/sst" --epochs 2 "$@"; }
acc() { sed -n 's/.*"accuracy": *\([0-9.]*\).*/\1/p' "$1/metrics.json"; }

@test "sst over ipc and over pipes, and with taps spliced in, gives the same accuracy" {
  export BERTPIPE_BIN
  sst --out "$TMP/ipc" 2>"$TMP/err1"
  sst --stdio --out "$TMP/stdio" 2>"$TMP/err2"
  BERTPIPE_TAP_AFTER=tokenize,batch sst --out "$TMP/tap" 2>"$TMP/err3"
  a=$(acc "$TMP/ipc")
  [ -n "$a" ]
  [ "$a" = "$(acc "$TMP/stdio")" ]
  [ "$a" = "$(acc "$TMP/tap")" ]
  awk -v a="$a" 'BEGIN { exit !(a >= 0.8) }'
  cmp "$TMP/ipc/model/model.safetensors" "$TMP/stdio/model/model.safetensors"
  [ -s "$TMP/tap/tap-tokenize.jsonl" ] && [ -s "$TMP/tap/tap-batch.jsonl" ]
  [ -s "$TMP/ipc/predictions.tsv" ] && [ -s "$TMP/ipc/train-metrics.jsonl" ]
  refute_sanitizer "$TMP"/err*
}

@test "a stage killed mid-run fails the pipeline with a message naming it" {
  export BERTPIPE_BIN
  # a train that is slow to start, so there is time to kill it
  BERTPIPE_TAP_AFTER=batch BERTPIPE_TAP="$BERTPIPE_BIN/tap --delay-ms 20" sst --out "$TMP/k" 2>"$TMP/err" & p=$!
  for _ in $(seq 100); do pgrep -f "$BERTPIPE_BIN/train --preset" >/dev/null && break; sleep 0.1; done
  sleep 0.5
  pkill -9 -f "$BERTPIPE_BIN/train --preset"
  status=0
  wait $p || status=$?
  [ "$status" -ne 0 ]
  grep -q "sst: error: stage train failed (killed by signal 9)" "$TMP/err" || { cat "$TMP/err"; false; }
}

@test "predict-sst labels sentences of ours with a label and a probability each" {
  export BERTPIPE_BIN
  sst --out "$TMP/m" 2>/dev/null
  printf 'the soundtrack was truly wonderful and i loved every minute\nthe dialogue was dull and i fell asleep twice\nthe cast seems not boring\n' |
    "$BERTPIPE_TOP/pipelines/predict-sst" "$TMP/m/model" >"$TMP/p"
  cat "$TMP/p"
  [ "$(wc -l <"$TMP/p")" -eq 3 ]
  sed -n 1p "$TMP/p" | grep -qP '^positive\t0\.\d{4}\tthe soundtrack'
  sed -n 2p "$TMP/p" | grep -qP '^negative\t0\.\d{4}\tthe dialogue'
  awk -F'\t' '{ if ($2 < 0.5 || $2 > 1) exit 1 }' "$TMP/p"
}

@test "squad over ipc and over pipes gives the same EM/F1 on the embedded default" {
  export BERTPIPE_BIN
  "$BERTPIPE_TOP/pipelines/squad" --epochs 3 --out "$TMP/ipc" 2>"$TMP/err1"
  "$BERTPIPE_TOP/pipelines/squad" --epochs 3 --stdio --out "$TMP/stdio" 2>"$TMP/err2"
  [ -s "$TMP/ipc/predictions.json" ] && [ -s "$TMP/ipc/nbest_predictions.json" ]
  f1=$(sed -n 's/.*"f1":\([0-9.]*\).*/\1/p' "$TMP/ipc/metrics.json")
  [ -n "$f1" ]
  [ "$f1" = "$(sed -n 's/.*"f1":\([0-9.]*\).*/\1/p' "$TMP/stdio/metrics.json")" ]
  # the official-script file mode agrees with the frame mode
  score --dataset "$BERTPIPE_TOP/pipelines/default/squad-validation.json" --predictions "$TMP/ipc/predictions.json" >"$TMP/official"
  grep -q "\"f1\": $f1" "$TMP/official" || awk -v a="$f1" -v b="$(sed 's/.*"f1": \([0-9.]*\).*/\1/' "$TMP/official")" 'BEGIN { d = a - b; exit !(d < 1e-9 && d > -1e-9) }'
  refute_sanitizer "$TMP"/err*
}

@test "predict-squad answers a question of ours" {
  export BERTPIPE_BIN
  "$BERTPIPE_TOP/pipelines/squad" --out "$TMP/q" 2>/dev/null
  "$BERTPIPE_TOP/pipelines/predict-squad" "$TMP/q/model" --max-length 96 --doc-stride 32 \
    --question "Where did Ilse Varga move to?" \
    --context "Ilse Varga was born in Ghent in 1902. Later Ilse moved to Porto, where the family had a small house. Ilse worked as a chemist for most of a long life." >"$TMP/a"
  cat "$TMP/a"
  grep -qP '^Porto\t-?[0-9.]+$' "$TMP/a"
}

@test "sst: every flag given on the embedded default is the value used and recorded" {
  export BERTPIPE_BIN
  BERTPIPE_TRAIN=$(recorder train) BERTPIPE_BATCH=$(recorder batch) BERTPIPE_TOKENIZE=$(recorder tokenize) \
    BERTPIPE_EVAL=$(recorder eval) \
    "$BERTPIPE_TOP/pipelines/sst" --out "$TMP/o" --lr 5e-5 --batch-size 8 --eval-batch-size 4 --epochs 1 \
      --max-length 128 --max-steps 3 --max-grad-norm 0.5 --grad-accum 2 --warmup-steps 1 --weight-decay 0.01 \
      --dropout 0.2 --seed 7 --save-every 2 --threads 1 --device cpu --precision fp32 --pad max --bucket 4 \
      --sample 64 --eval-sample 20 2>"$TMP/err" || { cat "$TMP/err"; false; }
  t=$TMP/rec-train.argv
  [ "$(arg_of "$t" --lr)" = 5e-5 ] && [ "$(arg_of "$t" --max-steps)" = 3 ] && [ "$(arg_of "$t" --max-grad-norm)" = 0.5 ]
  [ "$(arg_of "$t" --grad-accum)" = 2 ] && [ "$(arg_of "$t" --warmup-steps)" = 1 ] && [ "$(arg_of "$t" --weight-decay)" = 0.01 ]
  [ "$(arg_of "$t" --dropout)" = 0.2 ] && [ "$(arg_of "$t" --seed)" = 7 ] && [ "$(arg_of "$t" --save-every)" = 2 ]
  [ "$(arg_of "$t" --threads)" = 1 ] && [ "$(arg_of "$t" --device)" = cpu ] && [ "$(arg_of "$t" --precision)" = fp32 ]
  grep -qx -- '--batch-size' "$TMP/rec-batch.argv" && grep -qx 8 "$TMP/rec-batch.argv" && grep -qx 4 "$TMP/rec-batch.argv"
  [ "$(arg_of "$TMP/rec-batch.argv" --pad)" = max ] && [ "$(arg_of "$TMP/rec-batch.argv" --bucket)" = 4 ]
  [ "$(arg_of "$TMP/rec-tokenize.argv" --max-length)" = 128 ]
  [ "$(arg_of "$TMP/rec-eval.argv" --device)" = cpu ]
  # what ran: 3 optimizer steps; validation batches of 4, padded to 128 (--pad max)
  [ "$(grep -c '"scope":"train"' "$TMP/o/train-metrics.jsonl")" -eq 3 ]
  frames2json --in "file:$TMP/o/validation.batches" | grep -m1 '"k":"batch"' | grep -qF '"shape":[4,128]'
  # and what is recorded
  c=$TMP/o/run_config.json
  for kv in '"lr": 5e-5' '"batch-size": 8' '"eval-batch-size": 4' '"epochs": 1' '"max-length": 128' \
            '"max-steps": 3' '"max-grad-norm": 0.5' '"grad-accum": 2' '"warmup-steps": 1' '"weight-decay": 0.01' \
            '"dropout": 0.2' '"seed": 7' '"save-every": 2' '"threads": 1' '"device": "cpu"' '"precision": "fp32"' \
            '"pad": "max"' '"bucket": 4' '"sample": 64' '"eval-sample": 20' '"task": "classification"'; do
    grep -qF "$kv" "$c" || { echo "missing $kv in:"; cat "$c"; false; }
  done
  /usr/bin/python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$c"
}

@test "squad: flags equal to the recipe's defaults win over the embedded default's" {
  export BERTPIPE_BIN
  BERTPIPE_TRAIN=$(recorder train) BERTPIPE_BATCH=$(recorder batch) BERTPIPE_TOKENIZE=$(recorder tokenize) \
    "$BERTPIPE_TOP/pipelines/squad" --simple --epochs 2 --lr 3e-5 --batch-size 12 --max-steps 4 --out "$TMP/q" \
      2>"$TMP/err" || { cat "$TMP/err"; false; }
  [ "$(arg_of "$TMP/rec-train.argv" --lr)" = 3e-5 ]
  grep -qx 12 "$TMP/rec-batch.argv" && [ "$(arg_of "$TMP/rec-batch.argv" --epochs)" = 2 ]
  [ "$(arg_of "$TMP/rec-tokenize.argv" --max-length)" = 256 ] && [ "$(arg_of "$TMP/rec-tokenize.argv" --doc-stride)" = 0 ]
  grep -qx -- --no-overflow "$TMP/rec-tokenize.argv"
  grep -qF '"epochs": 2' "$TMP/q/run_config.json" && grep -qF '"lr": 3e-5' "$TMP/q/run_config.json"
  grep -qF '"task": "qa"' "$TMP/q/run_config.json"
}

@test "sst passes the variant options to train, records them, and the model it saves is that variant" {
  export BERTPIPE_BIN
  BERTPIPE_TRAIN=$(recorder train) "$BERTPIPE_TOP/pipelines/sst" --out "$TMP/v" --epochs 1 --max-steps 4 --threads 1 \
    --head gru --loss bce --freeze bert --optimizer sgd --momentum 0.9 --nesterov --rnn-hidden 16 --rnn-layers 1 \
    --unidirectional --head-dropout 0.3 2>"$TMP/err" || { cat "$TMP/err"; false; }
  t=$TMP/rec-train.argv
  [ "$(arg_of "$t" --head)" = gru ] && [ "$(arg_of "$t" --loss)" = bce ] && [ "$(arg_of "$t" --freeze)" = bert ]
  [ "$(arg_of "$t" --optimizer)" = sgd ] && [ "$(arg_of "$t" --momentum)" = 0.9 ] && grep -qx -- --nesterov "$t"
  [ "$(arg_of "$t" --rnn-hidden)" = 16 ] && grep -qx -- --unidirectional "$t" && [ "$(arg_of "$t" --head-dropout)" = 0.3 ]
  for kv in '"head": "gru"' '"loss": "bce"' '"freeze": "bert"' '"optimizer": "sgd"' '"nesterov": 1'; do
    grep -qF "$kv" "$TMP/v/run_config.json" || { echo "missing $kv"; cat "$TMP/v/run_config.json"; false; }
  done
  grep -qF '"class": "BertWithGRUHead"' "$TMP/v/model/config.json"
  grep -qE '"accuracy": [0-9.]+' "$TMP/v/metrics.json"
}

@test "squad --model lstm and --model transformer train the baselines from scratch (no preset) and score them" {
  for body in lstm transformer; do
    "$BERTPIPE_TOP/pipelines/squad" --out "$TMP/$body" --model "$body" --hidden 32 --heads 4 --intermediate 48 \
      --epochs 1 --max-steps 6 --threads 1 --no-plot 2>"$TMP/err" || { cat "$TMP/err"; false; }
    grep -qF "\"body\": \"$body\"" "$TMP/$body/model/config.json"
    grep -qE '"exact_match": ?[0-9.]+' "$TMP/$body/metrics.json"
    ! grep -qF '"preset"' "$TMP/$body/run_config.json"
  done
}

@test "a usage error in a pipeline exits 2 with one line naming the option" {
  run "$BERTPIPE_TOP/pipelines/sst" --no-such-flag
  [ "$status" -eq 2 ]
  [ "$output" = "sst: error: unknown option '--no-such-flag' (see sst --help)" ]
  run "$BERTPIPE_TOP/pipelines/squad" --lr
  [ "$status" -eq 2 ]
  [ "$output" = "squad: error: --lr needs a value (see squad --help)" ]
}

# Pids of a process's descendants (the run's own processes, never found by name).
descendants() {
  local p c
  for p in "$@"; do
    for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do echo "$c"; descendants "$c"; done
  done
}

@test "SIGTERM mid-training stops every stage, removes the run folder, and --resume ends at the uninterrupted weights" {
  export BERTPIPE_BIN
  common=(--epochs 2 --dropout 0.1 --seed 3)
  "$BERTPIPE_TOP/pipelines/sst" "${common[@]}" --out "$TMP/full" 2>"$TMP/err-full"
  mkdir "$TMP/runs"
  # BERTPIPE_STOP_TIMEOUT far above what the stages need: the run must end when they do (its
  # watchdog ignored TERM once, and every interrupted run waited out the whole timeout).
  TMPDIR=$TMP/runs BERTPIPE_STOP_TIMEOUT=100 BERTPIPE_TAP_AFTER=batch BERTPIPE_TAP="$BERTPIPE_BIN/tap --delay-ms 30" \
    "$BERTPIPE_TOP/pipelines/sst" "${common[@]}" --out "$TMP/cut" 2>"$TMP/err-cut" & p=$!
  # wait for training to be under way: the train stage has sent a few metric frames
  for _ in $(seq 600); do
    [ -n "$(ls "$TMP/runs")" ] && pgrep -P $p >/dev/null && [ -f "$TMP/cut/validation.batches" ] &&
      grep -q '"scope":"train"' "$TMP/cut/train-metrics.jsonl" 2>/dev/null && break
    sleep 0.1
  done
  sleep 0.5
  pids=$(descendants $p)
  [ -n "$pids" ]
  kill -TERM $p
  local t0=$SECONDS
  status=0
  wait $p || status=$?
  cat "$TMP/err-cut" >&2
  [ "$status" -eq 143 ]
  [ $((SECONDS - t0)) -lt 40 ] || { echo "the run took $((SECONDS - t0)) s to stop"; false; }
  for q in $pids; do ! kill -0 "$q" 2>/dev/null || { ps -o pid,args -p "$q"; false; }; done
  [ -z "$(ls -A "$TMP/runs")" ]
  grep -q "interrupted by SIGTERM" "$TMP/err-cut"
  [ -f "$TMP/cut/model/model.safetensors" ]
  "$BERTPIPE_TOP/pipelines/sst" "${common[@]}" --out "$TMP/cut" --resume "$TMP/cut/model" 2>"$TMP/err-resume" ||
    { cat "$TMP/err-resume"; false; }
  cmp "$TMP/full/model/model.safetensors" "$TMP/cut/model/model.safetensors"
}
