#!/usr/bin/env bats
# train and eval: learning, exact resume after SIGTERM, refusing a non-finite loss, bad
# checkpoints. Inputs are example frames made from the embedded default data set with awk,
# so these tests need no other stage than the ones under test and tokenize/batch.
load test_helper

VOCAB="$BERTPIPE_TOP/pipelines/default/vocab.txt"
# "eval" is a shell builtin: the stage is always called by its path
EVAL="$BERTPIPE_BIN/eval"

@test "train learns the default sentiment set and evaluates it each epoch" {
  batches validation 200 32 1 --no-shuffle --out "file:$TMP/val.batches"
  batches train 2000 32 2 | train --preset tiny --lr 2e-3 --vocab "$VOCAB" --save "$TMP/model" \
    --eval "file:$TMP/val.batches" --threads 2 | frames2json >"$TMP/metrics.jsonl"
  # one train metric per step (63 per epoch), one eval metric per epoch
  [ "$(grep -c '"scope":"train"' "$TMP/metrics.jsonl")" -eq 126 ]
  [ "$(grep -c '"scope":"eval"' "$TMP/metrics.jsonl")" -eq 2 ]
  acc=$(grep '"scope":"eval"' "$TMP/metrics.jsonl" | tail -1 | sed 's/.*"accuracy":\([0-9.]*\).*/\1/')
  awk -v a="$acc" 'BEGIN { exit !(a >= 0.8) }'
  for f in model.safetensors config.json vocab.txt tokenizer_config.json; do [ -s "$TMP/model/$f" ]; done
  [ -s "$TMP/model/checkpoint-126/optimizer.safetensors" ]
  grep -q '"BertForSequenceClassification"' "$TMP/model/config.json"
  grep -q '"positive"' "$TMP/model/config.json"
}

@test "eval sends one logits frame per batch with the ids and labels of its rows" {
  batches train 64 32 1 | train --preset tiny --vocab "$VOCAB" --save "$TMP/model" --max-steps 2 >/dev/null
  batches validation 50 16 1 --no-shuffle | "$EVAL" --checkpoint "$TMP/model" | frames2json >"$TMP/logits.jsonl"
  [ "$(grep -c '"k":"logits"' "$TMP/logits.jsonl")" -eq 4 ]
  grep '"k":"logits"' "$TMP/logits.jsonl" | head -1 | grep -q '"example_ids":\["validation-0","validation-1",'
  grep '"k":"logits"' "$TMP/logits.jsonl" | tail -1 | grep -q '"logits":{"dtype":"f32","shape":\[2,2\]'
  grep -q '"labels":{"dtype":"i32","shape":\[2\]' "$TMP/logits.jsonl"
}

@test "SIGTERM at step 10 then --resume gives parameters bit-identical to an uninterrupted run" {
  batches train 320 16 1 --seed 7 --out "file:$TMP/train.batches"
  # uninterrupted: 20 steps, dropout on
  train --in "file:$TMP/train.batches" --preset tiny --vocab "$VOCAB" --lr 5e-4 --warmup-steps 3 \
    --weight-decay 0.01 --save "$TMP/full" --threads 2 >/dev/null
  # interrupted: frames fed slowly, SIGTERM once step 10 is reported
  tap --delay-ms 40 --log /dev/null --in "file:$TMP/train.batches" |
    BERTPIPE_QUIET=0 train --preset tiny --vocab "$VOCAB" --lr 5e-4 --warmup-steps 3 --weight-decay 0.01 \
      --save "$TMP/part" --threads 2 2>"$TMP/err" | frames2json >"$TMP/m.jsonl" 2>/dev/null &
  for _ in $(seq 200); do
    grep -q '"step":10,' "$TMP/m.jsonl" 2>/dev/null && break
    sleep 0.05
  done
  pkill -TERM -f "train --preset tiny --vocab $VOCAB --lr 5e-4 --warmup-steps 3 --weight-decay 0.01 --save $TMP/part"
  wait || true
  grep -q "stopped by signal 15" "$TMP/err" || { cat "$TMP/err"; false; }
  step=$(sed -n 's/.*saved .* at step \([0-9]*\) (terminated).*/\1/p' "$TMP/err")
  [ "$step" -ge 10 ] && [ "$step" -lt 20 ]
  ! cmp -s "$TMP/full/model.safetensors" "$TMP/part/model.safetensors"
  # resume from the saved state on the same stream: steps 11..20
  train --in "file:$TMP/train.batches" --resume "$TMP/part" --lr 5e-4 --warmup-steps 3 --weight-decay 0.01 \
    --save "$TMP/part" --threads 2 >/dev/null
  cmp "$TMP/full/model.safetensors" "$TMP/part/model.safetensors"
  cmp "$TMP/full/checkpoint-20/optimizer.safetensors" "$TMP/part/checkpoint-20/optimizer.safetensors"
}

@test "a learning rate of 1e30 stops training at its first step, naming it, and saves no useless checkpoint" {
  batches train 320 16 1 --out "file:$TMP/train.batches"
  run bash -c "train --in 'file:$TMP/train.batches' --preset tiny --vocab '$VOCAB' --lr 1e30 --max-grad-norm 0 \
    --save '$TMP/model' --save-every 1 2>'$TMP/err' >/dev/null"
  [ "$status" -eq 1 ]
  assert_one_error_line "$TMP/err" train
  grep -qE "^train: error: step 1: .*(training diverged|loss is -?(nan|inf)).*no checkpoint was saved" "$TMP/err"
  [ ! -e "$TMP/model/model.safetensors" ]
}

@test "eval refuses a checkpoint whose weights do not fit its config, naming the tensor" {
  batches train 64 32 1 | train --preset tiny --vocab "$VOCAB" --save "$TMP/model" --max-steps 1 >/dev/null
  sed -i 's/"hidden_size": 128/"hidden_size": 64/; s/"intermediate_size": 512/"intermediate_size": 256/' "$TMP/model/config.json"
  run bash -c "$(declare -f examples batches); VOCAB='$VOCAB'; BERTPIPE_TOP='$BERTPIPE_TOP'; batches validation 8 8 1 --no-shuffle | '$EVAL' --checkpoint '$TMP/model' 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" eval
  grep -q "bert.embeddings" "$TMP/err"
}

@test "--device cuda without a usable GPU is a clear error; auto falls back to the CPU and says why" {
  batches train 32 32 1 --out "file:$TMP/b.batches"
  run bash -c "train --in 'file:$TMP/b.batches' --preset tiny --vocab '$VOCAB' --device cuda 2>'$TMP/err' >/dev/null"
  if [ "$status" -eq 0 ]; then skip "a GPU is present"; fi
  assert_one_error_line "$TMP/err" train
  grep -q "device cuda" "$TMP/err"
  BERTPIPE_QUIET=0 train --in "file:$TMP/b.batches" --preset tiny --vocab "$VOCAB" --device auto --max-steps 1 2>"$TMP/err2" >/dev/null
  grep -q "device: cpu (" "$TMP/err2"
}

@test "--precision bf16 on the cpu: bf16 products where the CPU has avx512_bf16, one error line where not" {
  batches train 64 32 1 --out "file:$TMP/b.batches"
  batches validation 16 16 1 --no-shuffle --out "file:$TMP/v.batches"
  # train and eval in bf16: on oneDNN where the CPU has avx512_bf16, else on the test build's
  # emulated products (BERTPIPE_EMULATE_BF16), which the note must name
  emulate=1
  if grep -qw avx512_bf16 /proc/cpuinfo; then emulate=; fi
  BERTPIPE_EMULATE_BF16=$emulate BERTPIPE_QUIET=0 train --in "file:$TMP/b.batches" --preset tiny --vocab "$VOCAB" \
    --device cpu --precision bf16 --save "$TMP/model" 2>"$TMP/err" >/dev/null
  grep -q "device: cpu, bf16 products" "$TMP/err"
  if [ -n "$emulate" ]; then grep -q "bf16 products (emulated" "$TMP/err"; else ! grep -q "emulated" "$TMP/err"; fi
  BERTPIPE_EMULATE_BF16=$emulate "$EVAL" --checkpoint "$TMP/model" --in "file:$TMP/v.batches" --device cpu \
    --precision bf16 | frames2json >"$TMP/l.jsonl"
  [ "$(grep -c '"k":"logits"' "$TMP/l.jsonl")" -eq 1 ]
  ! grep -q "weights packed" "$TMP/err"
  # packed weights (BERTPIPE_BF16_PACK): named in the note, the same training loss as without
  BERTPIPE_EMULATE_BF16=$emulate BERTPIPE_BF16_PACK=1 BERTPIPE_QUIET=0 train --in "file:$TMP/b.batches" --preset tiny \
    --vocab "$VOCAB" --device cpu --precision bf16 --save "$TMP/packed" 2>"$TMP/err" >"$TMP/m.packed"
  grep -q "bf16 products.*, weights packed (BERTPIPE_BF16_PACK)" "$TMP/err"
  BERTPIPE_EMULATE_BF16=$emulate train --in "file:$TMP/b.batches" --preset tiny --vocab "$VOCAB" --device cpu \
    --precision bf16 --save "$TMP/plain" 2>/dev/null >"$TMP/m.plain"
  # emulated, packed and plain products sum alike (test_bf16 checks oneDNN's bf16 kernels within 1e-5)
  if [ -n "$emulate" ]; then cmp "$TMP/packed/model.safetensors" "$TMP/plain/model.safetensors"; fi
  # a CPU without it, played by the test build's BERTPIPE_HIDE_BF16
  run bash -c "BERTPIPE_HIDE_BF16=1 train --in 'file:$TMP/b.batches' --preset tiny --vocab '$VOCAB' --device cpu --precision bf16 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" train
  grep -q "avx512_bf16" "$TMP/err"
  BERTPIPE_HIDE_BF16=1 BERTPIPE_QUIET=0 train --in "file:$TMP/b.batches" --preset tiny --vocab "$VOCAB" --device cpu \
    --precision auto --max-steps 1 2>"$TMP/err2" >/dev/null
  grep -q "device: cpu, fp32: this CPU has no avx512_bf16" "$TMP/err2"
}

@test "a saved checkpoint gives the same logits in the PyTorch reference, and loads from torch.save too" {
  /usr/bin/python3 -c 'import torch' 2>/dev/null || skip "no python3-torch at /usr/bin/python3"
  batches train 96 32 1 | train --preset tiny --vocab "$VOCAB" --lr 1e-3 --save "$TMP/model" >/dev/null
  batches validation 40 16 1 --no-shuffle --out "file:$TMP/val.batches"
  frames2json --in "file:$TMP/val.batches" --out "$TMP/val.jsonl"
  /usr/bin/python3 "$BERTPIPE_TOP/tests/reference/checkpoint_roundtrip.py" "$TMP/model" "$TMP/val.jsonl" "$TMP/rt"
  "$EVAL" --checkpoint "$TMP/model" --in "file:$TMP/val.batches" | frames2json >"$TMP/ours.jsonl"
  "$EVAL" --checkpoint "$TMP/rt/torchsave" --in "file:$TMP/val.batches" | frames2json >"$TMP/torch.jsonl"
  # the same weights read from pytorch_model.bin give the very same logits
  cmp <(grep -v '"k":"hello"' "$TMP/ours.jsonl") <(grep -v '"k":"hello"' "$TMP/torch.jsonl")
  python3 - "$TMP/ours.jsonl" "$TMP/rt/reference-logits.json" <<'PY'
import base64, json, struct, sys
ref = json.load(open(sys.argv[2]))
worst, n = 0.0, 0
for line in open(sys.argv[1]):
    f = json.loads(line)
    if f["k"] != "logits": continue
    B, C = f["logits"]["shape"]
    vals = struct.unpack("<%df" % (B * C), base64.b64decode(f["logits"]["data"]["$bin"]))
    for i, eid in enumerate(f["example_ids"]):
        want = ref[eid]
        scale = max(abs(x) for x in want)
        worst = max(worst, max(abs(vals[i * C + c] - want[c]) for c in range(C)) / scale)
        n += 1
assert n == 40, n
assert worst <= 1e-4, worst
print("max relative error", worst)
PY
}

@test "a vocab.txt larger than the model's embedding is refused, naming both" {
  batches train 32 32 1 | train --preset tiny --vocab "$VOCAB" --save "$TMP/model" --max-steps 1 >/dev/null
  sed 's/"vocab_size": [0-9]*/"vocab_size": 100/' "$TMP/model/config.json" >"$TMP/small.json"
  run bash -c "$(declare -f examples batches); VOCAB='$VOCAB'; BERTPIPE_TOP='$BERTPIPE_TOP'; batches train 8 8 1 | train --config '$TMP/small.json' 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" train
  grep -q "vocab.txt has [0-9]* tokens but the model's embedding has 100 rows" "$TMP/err"
}
