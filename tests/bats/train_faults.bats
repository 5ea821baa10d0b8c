#!/usr/bin/env bats
# train when its numbers go wrong: a loss or gradient norm that turns NaN (injected with the
# test build's BERTPIPE_FAULT=nan:OP:N, common/backend/fault.h), a loss that explodes (too high a
# learning rate), and an interruption in the middle of a gradient accumulation. Training must
# stop naming the step, keep only a checkpoint whose weights evaluate (eval | postprocess takes
# its logits: postprocess refuses a logit that is not finite), and resume bit for bit.
load test_helper

EVAL="$BERTPIPE_BIN/eval"   # "eval" alone is the shell builtin

setup() {
  TMP=$(mktemp -d "${BATS_TMPDIR:-/tmp}/bp.XXXXXX")
  batches train 320 16 1 --out "file:$TMP/train.batches"
}

# train on the 20 batches, saving every step; status and stderr ($TMP/err) kept.
train_saving() { # fault-spec-or-"" [train args...]
  local fault=$1
  shift
  run bash -c 'exec env "$@" 2>&1 >/dev/null' _ ${fault:+BERTPIPE_FAULT=$fault} train --in "file:$TMP/train.batches" \
    --preset tiny --vocab "$VOCAB" --threads 1 --save "$TMP/model" --save-every 1 "$@"
  printf '%s\n' "$output" >"$TMP/err"
  refute_sanitizer "$TMP/err"
}

# The step the error line names, and the checkpoint it says it keeps.
stopped_step() { sed -n 's/^train: error: step \([0-9]*\):.*/\1/p' "$TMP/err"; }
kept_step() { sed -n 's/.*the checkpoint of step \([0-9]*\) in .* is kept.*/\1/p' "$TMP/err"; }

# The kept checkpoint evaluates: every logit finite (postprocess refuses any other).
assert_kept_evaluates() {
  [ -s "$TMP/model/model.safetensors" ]
  "$EVAL" --checkpoint "$TMP/model" --in "file:$TMP/train.batches" --threads 1 2>"$TMP/eval.err" |
    postprocess >/dev/null 2>"$TMP/pp.err" || { cat "$TMP/eval.err" "$TMP/pp.err"; false; }
}

@test "a loss that turns NaN stops training at its step; the checkpoint kept is the step before, and it evaluates" {
  # the 50th matmul: the third step's forward pass (the save of every step tries its weights
  # on a batch too), whose activations turn NaN
  train_saving nan:matmul_forward:50
  [ "$status" -eq 1 ]
  assert_one_error_line "$TMP/err" train
  grep -qE "^train: error: step [0-9]+: loss is nan; stopping, the checkpoint of step [0-9]+ in .* is kept \(batch frame [0-9]+\)$" "$TMP/err"
  [ "$(kept_step)" -eq $(( $(stopped_step) - 1 )) ]
  assert_kept_evaluates
}

@test "a gradient norm that turns NaN stops training at its step and keeps the step before" {
  # three sums of squares a step: the 10th is in step 4
  train_saving nan:sumsq:10
  [ "$status" -eq 1 ]
  assert_one_error_line "$TMP/err" train
  grep -q "^train: error: step 4: gradient norm is nan at optimizer step 4 (optim); stopping, the checkpoint of step 3 in .* is kept" "$TMP/err"
  [ "$(kept_step)" -eq $(( $(stopped_step) - 1 )) ]
  assert_kept_evaluates
}

@test "weights that turn NaN in an update are never saved: the last checkpoint whose weights evaluate is kept" {
  # three AdamW calls a step: the 7th is in step 3, whose weights then fail their try before the save
  train_saving nan:adamw:7
  [ "$status" -eq 1 ]
  assert_kept_evaluates
  assert_one_error_line "$TMP/err" train
  grep -q "^train: error: step 3: the weights after it fail on the last batch: loss is nan; not saved; stopping, the checkpoint of step 2 in .* is kept" "$TMP/err"
}

@test "a loss that explodes stops training (--max-loss-ratio, default 100) and keeps the last checkpoint that evaluates" {
  # lr 10 warmed up over 20 steps: fine for a few steps, then the loss leaves every scale
  train_saving "" --lr 10 --warmup-steps 20
  [ "$status" -eq 1 ]
  assert_one_error_line "$TMP/err" train
  grep -q "is over 100 times 0.6931, the loss of a model that knows nothing (--max-loss-ratio): training diverged" "$TMP/err"
  [ "$(kept_step)" -ge 1 ]
  assert_kept_evaluates
}

@test "--lr 1e6 fails at the first step instead of exiting 0 with a useless model" {
  run bash -c "train --in 'file:$TMP/train.batches' --preset tiny --vocab '$VOCAB' --threads 1 --lr 1e6 \
    --save '$TMP/model' 2>'$TMP/err' >/dev/null"
  [ "$status" -eq 1 ]
  assert_one_error_line "$TMP/err" train
  grep -qE "^train: error: step [12]: .*training diverged.*no checkpoint was saved" "$TMP/err"
  [ ! -e "$TMP/model/model.safetensors" ]
}

@test "--max-loss-ratio 0 lets a diverging run go on, while a NaN still stops it" {
  run bash -c "train --in 'file:$TMP/train.batches' --preset tiny --vocab '$VOCAB' --threads 1 --lr 10 --warmup-steps 20 \
    --max-loss-ratio 0 2>'$TMP/err' >/dev/null"
  ! grep -q "training diverged" "$TMP/err"
  [ "$status" -eq 0 ] || grep -q "loss is \(nan\|inf\)\|gradient norm is" "$TMP/err"
}

@test "SIGTERM in the middle of a gradient accumulation, then --resume, ends bit-identical to an uninterrupted run" {
  common=(--preset tiny --vocab "$VOCAB" --threads 1 --lr 5e-4 --grad-accum 2 --dropout 0.1 --seed 5)
  train --in "file:$TMP/train.batches" "${common[@]}" --save "$TMP/full" >/dev/null 2>&1
  # interrupted: 11 batches arrive (5 steps and one batch of the 6th), then the input idles
  frames2json --in "file:$TMP/train.batches" | head -12 >"$TMP/first.jsonl"   # the hello and 11 batches
  mkfifo "$TMP/feed"
  BERTPIPE_QUIET=0 train --in "ipc://$TMP/t.sock" "${common[@]}" --save "$TMP/part" >"$TMP/m.frames" 2>"$TMP/err" & p=$!
  json2frames --out "ipc://$TMP/t.sock" <"$TMP/feed" 2>/dev/null &
  exec 8>"$TMP/feed"
  cat "$TMP/first.jsonl" >&8
  for _ in $(seq 300); do [ "$(grep -c '"scope":"train"' <(frames2json <"$TMP/m.frames" 2>/dev/null))" -ge 5 ] && break; sleep 0.1; done
  sleep 1   # the 11th batch's forward and backward
  kill -TERM $p
  status=0
  timeout 30 tail --pid=$p -f /dev/null || status=124
  exec 8>&-
  [ "$status" -eq 0 ]
  grep -q "saved .* at step 5 (terminated)" "$TMP/err" || { cat "$TMP/err"; false; }
  train --in "file:$TMP/train.batches" --resume "$TMP/part" --threads 1 --lr 5e-4 --grad-accum 2 --dropout 0.1 --seed 5 \
    --save "$TMP/part" >/dev/null 2>&1
  cmp "$TMP/full/model.safetensors" "$TMP/part/model.safetensors"
  # the optimizer state lives in the run folder's last checkpoint-STEP (both runs end at one step)
  last=$(cd "$TMP/full" && ls -d checkpoint-* | sort -t- -k2 -n | tail -1)
  [ -n "$last" ] && [ -d "$TMP/part/$last" ]
  cmp "$TMP/full/$last/optimizer.safetensors" "$TMP/part/$last/optimizer.safetensors"
}
