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
  grep -q "sst: error: stage train failed (killed by signal 9)" "$TMP/err"
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
