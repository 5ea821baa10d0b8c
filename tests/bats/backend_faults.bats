#!/usr/bin/env bats
# A backend fault (what a CUDA error is on a GPU) stops train and eval with one error line that
# names it, a non-zero status, no checkpoint or logits after it, and a stream that downstream
# sees fail. The fault is injected with BERTPIPE_FAULT=backend:OP:N (common/backend/fault.h),
# which only the test build (build/san/bin) has; it works on the cpu backend, so no GPU is needed.
load test_helper

VOCAB="$BERTPIPE_TOP/pipelines/default/vocab.txt"
EVAL="$BERTPIPE_BIN/eval"   # "eval" alone is the shell builtin

# 12 labelled sentences tokenized and batched by 4, in order: 3 batch frames in $TMP/b.batches.
make_batches() {
  {
    echo '{"v":1,"k":"hello","from":"test","task":"classification","labels":["negative","positive"],"num_labels":2}'
    for i in $(seq 0 11); do
      word=good; [ $((i % 2)) -eq 1 ] && word=bad
      printf '{"v":1,"k":"example","seq":%d,"example_id":"f-%d","text":"a %s film, take %d","label":%d}\n' \
        "$i" "$i" "$word" "$i" $((1 - i % 2))
    done
    echo '{"v":1,"k":"eos","from":"test","count":12}'
  } | json2frames | tokenize --vocab "$VOCAB" --max-length 16 |
    batch --batch-size 4 --epochs 1 --no-shuffle --out "file:$TMP/b.batches"
}

# train on the batches with the fault set; metrics as JSON lines, stderr in $TMP/err.
train_with_fault() { # spec [train args...]
  local spec=$1; shift
  run bash -c "BERTPIPE_FAULT='$spec' train --in 'file:$TMP/b.batches' --preset tiny --vocab '$VOCAB' --threads 1 $* \
    2>'$TMP/err' | frames2json >'$TMP/metrics.jsonl' 2>'$TMP/down.err'; exit \${PIPESTATUS[0]}"
}

@test "a backend fault in train's forward pass stops it with one line naming the fault" {
  make_batches
  train_with_fault backend:embedding_forward:2
  [ "$status" -ne 0 ]
  refute_sanitizer "$TMP/err"
  assert_one_error_line "$TMP/err" train
  grep -q "injected fault in embedding_forward call 2 (BERTPIPE_FAULT=backend:embedding_forward:2)" "$TMP/err"
}

@test "a backend fault in train's backward pass stops it with one line naming the fault" {
  make_batches
  train_with_fault backend:matmul_backward:1
  [ "$status" -ne 0 ]
  refute_sanitizer "$TMP/err"
  assert_one_error_line "$TMP/err" train
  grep -q "injected fault in matmul_backward call 1" "$TMP/err"
}

@test "a backend fault in the optimizer step keeps the last good checkpoint and fails the metric stream" {
  make_batches
  # 3 AdamW calls per step (one per parameter group): call 4 is in step 2, after step 1 was saved
  train_with_fault backend:adamw:4 --save "$TMP/model" --save-every 1
  [ "$status" -ne 0 ]
  refute_sanitizer "$TMP/err"
  assert_one_error_line "$TMP/err" train
  grep -q "step 2: cpu backend: injected fault in adamw call 4" "$TMP/err"
  grep -aq '"step":"1"' "$TMP/model/checkpoint-1/optimizer.safetensors"
  [ ! -e "$TMP/model/checkpoint-2" ]
  # downstream got step 1's metric, then the error: no eos, and it fails too
  [ "$(grep -c '"scope":"train"' "$TMP/metrics.jsonl")" -eq 1 ]
  grep -q '"k":"error".*injected fault in adamw call 4' "$TMP/metrics.jsonl"
  ! grep -q '"k":"eos"' "$TMP/metrics.jsonl"
  grep -q "frames2json: error: upstream stage train failed" "$TMP/down.err"
}

@test "a non-finite gradient norm caused by a backend fault reports the fault, not the norm" {
  make_batches
  train_with_fault backend:sumsq:1
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" train
  grep -q "injected fault in sumsq call 1" "$TMP/err"
  ! grep -q "gradient norm" "$TMP/err"
}

@test "a backend fault in eval sends no logits for the faulty batch; downstream sees the error and no eos" {
  make_batches
  train --in "file:$TMP/b.batches" --preset tiny --vocab "$VOCAB" --threads 1 --max-steps 1 --save "$TMP/model" >/dev/null
  # one embedding lookup per forward pass: call 2 is the second batch's
  run bash -c "BERTPIPE_FAULT=backend:embedding_forward:2 '$EVAL' --checkpoint '$TMP/model' --in 'file:$TMP/b.batches' \
    --threads 1 2>'$TMP/err' | frames2json >'$TMP/logits.jsonl' 2>'$TMP/down.err'; echo \"\${PIPESTATUS[*]}\" >'$TMP/rc'"
  read -r eval_rc down_rc <"$TMP/rc"
  [ "$eval_rc" -ne 0 ] && [ "$down_rc" -ne 0 ]
  refute_sanitizer "$TMP/err"
  assert_one_error_line "$TMP/err" eval
  grep -q "cpu backend: injected fault in embedding_forward call 2 (BERTPIPE_FAULT=backend:embedding_forward:2) (batch frame 1)" "$TMP/err"
  [ "$(grep -c '"k":"logits"' "$TMP/logits.jsonl")" -eq 1 ]
  grep '"k":"logits"' "$TMP/logits.jsonl" | grep -q '"seq":0,'
  grep -q '"k":"error".*injected fault in embedding_forward call 2' "$TMP/logits.jsonl"
  ! grep -q '"k":"eos"' "$TMP/logits.jsonl"
  grep -q "frames2json: error: upstream stage eval failed" "$TMP/down.err"
}

@test "a malformed BERTPIPE_FAULT is an error in the test build, naming the spec" {
  make_batches
  train_with_fault backend:nosuchop:1
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" train
  grep -q "BERTPIPE_FAULT wants backend:OP:N.*got 'backend:nosuchop:1'" "$TMP/err"
}

@test "the release build in bin/ has no fault injection: BERTPIPE_FAULT changes nothing" {
  [ -x "$BERTPIPE_TOP/bin/train" ] || skip "no release build (run make)"
  make_batches
  BERTPIPE_FAULT=backend:embedding_forward:1 "$BERTPIPE_TOP/bin/train" --in "file:$TMP/b.batches" --preset tiny \
    --vocab "$VOCAB" --threads 1 --max-steps 1 >/dev/null
}
