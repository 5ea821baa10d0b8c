#!/usr/bin/env bats
# train under mpirun: N ranks on shards of each batch give the parameters of one process on the
# whole batch and of --grad-accum N (both heads), resume continues exactly, a rank that dies or
# a bad input on rank 0 ends every rank non-zero and never hangs, and a plain train needs no
# MPI. Streams come from the embedded default data sets (test_helper.bash's batches, and QA
# batches of the default SQuAD-shaped set); models are fresh --preset tiny BERTs, dropout off.
load test_helper

# The relative tolerance of "the same parameters": N ranks and --grad-accum N sum the same
# row gradients in another order, so they differ by float32 rounding (about 5e-7 here).
TOL=1e-5
# Tensors whose true gradient is exactly zero, left out of the comparison: a softmax does not
# change when one constant is added to all its inputs, and the attention key bias (q . b_k, the
# same for every key) and the QA head's bias (the same for every token) add just that. Their
# gradients are rounding noise, which AdamW scales up to steps of about lr, so no two summation
# orders agree on them: 1 rank and --grad-accum 2 differ there as much (7e-5 on qa_outputs.bias).
# Under the QA head the last LayerNorm's bias is one more (W b shifts every token's logits alike).
ZERO_GRADIENT='attention\.self\.key\.bias'
QA_ZERO_GRADIENT='attention\.self\.key\.bias|^qa_outputs\.bias|encoder\.layer\.1\.output\.LayerNorm\.bias'

setup() {
  TMP=$(mktemp -d "${BATS_TMPDIR:-/tmp}/bp.XXXXXX")
  command -v mpirun >/dev/null 2>&1 || skip "no mpirun (Debian's openmpi-bin)"
  # OpenMPI refuses root unless told; tests and CI run as root
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  # Open MPI keeps memory until exit by design: the leak report would be about it, not us
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
}

# mpirun with N ranks on this 2-core machine (more ranks than cores: --oversubscribe)
ranks() { # N command...
  local n=$1; shift
  mpirun -np "$n" --oversubscribe "$@" </dev/null
}

TRAIN_OPTS="--preset tiny --dropout 0 --threads 1 --lr 5e-4 --warmup-steps 3 --weight-decay 0.01"

qa_batches() { # N-questions batch-size
  extract --format squad --limit "$1" "$BERTPIPE_TOP/pipelines/default/squad-train.json" |
    tokenize --vocab "$VOCAB" --max-length 48 --doc-stride 16 | batch --batch-size "$2" --no-shuffle
}

# Every parameter of two model.safetensors (but the ZERO_GRADIENT ones) within TOL of the
# largest one's magnitude: prints the largest difference and where it is.
same_params() { # a b [tolerance [left-out regex]]
  python3 - "$1" "$2" "${3:-$TOL}" "${4:-$ZERO_GRADIENT}" <<'PY'
import json, re, struct, sys
from array import array
def load(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    out = {}
    for k, v in json.loads(b[8:8 + n]).items():
        if k == '__metadata__': continue
        s, e = v['data_offsets']
        out[k] = array('f', b[8 + n + s:8 + n + e])
    return out
A, B = load(sys.argv[1]), load(sys.argv[2])
if sorted(A) != sorted(B): sys.exit("tensor names differ")
for k in [k for k in A if re.search(sys.argv[4], k)]: del A[k]
scale = max(max(map(abs, a)) for a in A.values())
diff, name = max((max(abs(x - y) for x, y in zip(A[k], B[k])), k) for k in A)
print("max |a-b| %.3g in %s, max |a| %.3g: relative %.3g" % (diff, name, scale, diff / scale))
sys.exit(0 if diff <= float(sys.argv[3]) * scale else 1)
PY
}

# The "train_loss" of the epoch metric in a metric stream.
epoch_loss() { frames2json --in "file:$1" | grep '"scope":"epoch"' | sed 's/.*"train_loss":\([-0-9.e]*\).*/\1/'; }

@test "classification: 2 ranks x 8 rows = 1 rank x 16 = --grad-accum 2 x 8 after 20 steps" {
  batches train 320 16 1 --no-shuffle --out "file:$TMP/b16"
  batches train 320 8 1 --no-shuffle --out "file:$TMP/b8"
  train --in "file:$TMP/b16" $TRAIN_OPTS --vocab "$VOCAB" --save "$TMP/one" --save-every 10 >"$TMP/one.metrics"
  train --in "file:$TMP/b8" $TRAIN_OPTS --vocab "$VOCAB" --grad-accum 2 --save "$TMP/accum" >/dev/null
  ranks 2 train --in "file:$TMP/b16" $TRAIN_OPTS --vocab "$VOCAB" --save "$TMP/two" >"$TMP/two.metrics"
  same_params "$TMP/one/model.safetensors" "$TMP/two/model.safetensors"
  same_params "$TMP/accum/model.safetensors" "$TMP/two/model.safetensors"
  # the tolerance is tight enough to see training: step 10's weights are far from step 20's
  ! same_params "$TMP/one/checkpoint-10/model.safetensors" "$TMP/two/model.safetensors" 1e-3
  # rank 0 alone reports, the whole batch's numbers: 20 steps, 320 sequences, the same loss
  [ "$(frames2json --in "file:$TMP/two.metrics" | grep -c '"scope":"train"')" -eq 20 ]
  frames2json --in "file:$TMP/two.metrics" | grep '"scope":"epoch"' | grep -q '"sequences":320,'
  awk -v a="$(epoch_loss "$TMP/one.metrics")" -v b="$(epoch_loss "$TMP/two.metrics")" \
    'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-5 * a) }'
}

@test "QA: 2 ranks x 6 rows = 1 rank x 12 = --grad-accum 2 x 6 after 20 steps" {
  qa_batches 200 12 >"$TMP/b12"
  qa_batches 200 6 >"$TMP/b6"
  [ "$(frames2json --in "file:$TMP/b12" | grep -c '"k":"batch"')" -ge 20 ]
  train --in "file:$TMP/b12" $TRAIN_OPTS --vocab "$VOCAB" --max-steps 20 --save "$TMP/one" >/dev/null
  train --in "file:$TMP/b6" $TRAIN_OPTS --vocab "$VOCAB" --max-steps 20 --grad-accum 2 --save "$TMP/accum" >/dev/null
  ranks 2 train --in "file:$TMP/b12" $TRAIN_OPTS --vocab "$VOCAB" --max-steps 20 --save "$TMP/two" >/dev/null
  grep -q '"BertForQuestionAnswering"' "$TMP/two/config.json"
  same_params "$TMP/one/model.safetensors" "$TMP/two/model.safetensors" "$TOL" "$QA_ZERO_GRADIENT"
  same_params "$TMP/accum/model.safetensors" "$TMP/two/model.safetensors" "$TOL" "$QA_ZERO_GRADIENT"
}

@test "3 ranks on batches of 16 (shards of 6, 5, 5) = 1 rank, fed through a pipe" {
  batches train 160 16 1 --no-shuffle --out "file:$TMP/b16"
  train --in "file:$TMP/b16" $TRAIN_OPTS --vocab "$VOCAB" --save "$TMP/one" >/dev/null
  # mpirun gives rank 0 the pipe (ranks() would give it /dev/null)
  cat "$TMP/b16" | BERTPIPE_QUIET=0 mpirun -np 3 --oversubscribe \
    train $TRAIN_OPTS --vocab "$VOCAB" --save "$TMP/three" 2>"$TMP/err" >/dev/null
  grep -q "data-parallel: 3 ranks (mpi, .*), 6 rows per rank of each batch of 16" "$TMP/err"
  # rank 0 alone logs: one start line, one summary
  [ "$(grep -c 'data-parallel: 3 ranks' "$TMP/err")" -eq 1 ]
  [ "$(grep -c 'epoch 1 done' "$TMP/err")" -eq 1 ]
  same_params "$TMP/one/model.safetensors" "$TMP/three/model.safetensors"
}

@test "2 ranks: --resume from step 10's checkpoint gives step 20 bit-identical to the run that went on" {
  batches train 320 16 1 --seed 7 --out "file:$TMP/b16"
  ranks 2 train --in "file:$TMP/b16" $TRAIN_OPTS --vocab "$VOCAB" --save "$TMP/full" --save-every 10 >/dev/null
  [ -s "$TMP/full/checkpoint-10/optimizer.safetensors" ]
  ranks 2 train --in "file:$TMP/b16" --resume "$TMP/full/checkpoint-10" --threads 1 --lr 5e-4 --warmup-steps 3 \
    --weight-decay 0.01 --save "$TMP/resumed" --save-every 10 >/dev/null
  cmp "$TMP/full/model.safetensors" "$TMP/resumed/model.safetensors"
  cmp "$TMP/full/checkpoint-20/optimizer.safetensors" "$TMP/resumed/checkpoint-20/optimizer.safetensors"
}

# The pid of rank R of the mpirun run whose environment has BP_TEST_MARK=$TMP (empty if none yet).
rank_pid() { # R
  local p
  for p in /proc/[0-9]*; do
    grep -qszx "BP_TEST_MARK=$TMP" "$p/environ" && grep -qszx "OMPI_COMM_WORLD_RANK=$1" "$p/environ" &&
      echo "${p#/proc/}" && return
  done
  return 0
}

@test "SIGTERM to rank 0 saves and ends every rank; --resume on 2 ranks then matches the run that went on" {
  batches train 320 16 1 --seed 7 --out "file:$TMP/b16"
  ranks 2 train --in "file:$TMP/b16" $TRAIN_OPTS --vocab "$VOCAB" --save "$TMP/full" >/dev/null
  export BP_TEST_MARK=$TMP
  tap --delay-ms 150 --log /dev/null --in "file:$TMP/b16" |
    BERTPIPE_QUIET=0 timeout 60 mpirun -np 2 --oversubscribe train $TRAIN_OPTS --vocab "$VOCAB" --save "$TMP/part" \
      2>"$TMP/err" | frames2json >"$TMP/m.jsonl" 2>/dev/null &
  for _ in $(seq 300); do
    grep -q '"step":5,' "$TMP/m.jsonl" 2>/dev/null && break
    sleep 0.05
  done
  kill -TERM "$(rank_pid 0)"
  wait || true
  grep -q "stopped by signal 15" "$TMP/err" || { cat "$TMP/err"; false; }
  step=$(sed -n 's/.*saved .* at step \([0-9]*\) (terminated).*/\1/p' "$TMP/err")
  [ "$step" -ge 5 ] && [ "$step" -lt 20 ]
  ranks 2 train --in "file:$TMP/b16" --resume "$TMP/part" --threads 1 --lr 5e-4 --warmup-steps 3 \
    --weight-decay 0.01 --save "$TMP/part" >/dev/null
  cmp "$TMP/full/model.safetensors" "$TMP/part/model.safetensors"
}

@test "a rank killed with SIGKILL ends every rank non-zero within seconds, and mpirun says which" {
  batches train 320 16 1 --out "file:$TMP/b16"
  # frames come slowly (20 batches, 10 s), so the run is mid-way when rank 1 is killed
  BP_TEST_MARK=$TMP tap --delay-ms 500 --log /dev/null --in "file:$TMP/b16" |
    BP_TEST_MARK=$TMP timeout 60 mpirun -np 2 --oversubscribe train $TRAIN_OPTS --vocab "$VOCAB" \
      >/dev/null 2>"$TMP/err" &
  local victim="" rank0=""
  for _ in $(seq 300); do
    victim=$(rank_pid 1) rank0=$(rank_pid 0)
    [ -n "$victim" ] && [ -n "$rank0" ] && break
    sleep 0.1
  done
  [ -n "$victim" ] && [ -n "$rank0" ]
  sleep 1
  kill -9 "$victim"
  start=$(date +%s)
  local status=0
  wait %1 || status=$?
  [ "$status" -ne 0 ] && [ "$status" -ne 124 ]   # 124: timeout had to end it
  [ $(($(date +%s) - start)) -lt 30 ]
  grep -q "process rank 1 with PID .* exited on signal 9" "$TMP/err" || { cat "$TMP/err"; false; }
  # and rank 0 is not left behind
  [ ! -e "/proc/$rank0" ] || grep -q '^State:.*Z' "/proc/$rank0/status"
}

@test "a bad stream on rank 0 is one error line of train, and every rank exits non-zero" {
  batches train 320 16 1 --out "file:$TMP/b16"
  { head -c 30000 "$TMP/b16"; printf '\301\301\301\301'; } >"$TMP/bad"
  local status=0
  timeout 60 mpirun -np 2 --oversubscribe train --in "file:$TMP/bad" $TRAIN_OPTS \
    --vocab "$VOCAB" --save "$TMP/model" </dev/null 2>"$TMP/err" >/dev/null || status=$?
  [ "$status" -ne 0 ] && [ "$status" -ne 124 ]
  [ "$(grep -c '^train' "$TMP/err")" -eq 1 ] || { cat "$TMP/err"; false; }   # no line from rank 1 either
  grep -q "^train: error: stream ends inside a frame .*(file:$TMP/bad)" "$TMP/err" || { cat "$TMP/err"; false; }
  [ ! -e "$TMP/model/model.safetensors" ]
}

@test "plain train needs no MPI: no libmpi linked, no data-parallel line; --data-parallel mpi without the plugin is one clear line" {
  ! ldd "$BERTPIPE_BIN/train" | grep -q libmpi
  batches train 64 16 1 --out "file:$TMP/b16"
  BERTPIPE_QUIET=0 train --in "file:$TMP/b16" --preset tiny --vocab "$VOCAB" --threads 1 2>"$TMP/err" >/dev/null
  ! grep -q "data-parallel" "$TMP/err"
  run bash -c "BERTPIPE_MPI_PLUGIN='$TMP/none.so' train --data-parallel mpi --in 'file:$TMP/b16' --preset tiny \
    --vocab '$VOCAB' 2>'$TMP/err' >/dev/null"
  [ "$status" -eq 2 ]
  assert_one_error_line "$TMP/err" train
  grep -q "data-parallel: cannot load the MPI plugin: .*none.so" "$TMP/err"
  run bash -c "train --data-parallel nccl --in 'file:$TMP/b16' --preset tiny --vocab '$VOCAB' 2>'$TMP/err' >/dev/null"
  [ "$status" -eq 2 ]
  grep -q "\-\-data-parallel 'nccl' unknown (auto, mpi, off)" "$TMP/err"
}
