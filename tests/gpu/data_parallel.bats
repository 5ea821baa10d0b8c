#!/usr/bin/env bats
# train under mpirun on the cuda backend: gradients summed on the GPU with NCCL. One rank on one
# GPU gives the single process's parameters (a sum over one rank, through NCCL); two ranks on two
# GPUs give one GPU's on the whole batch. Both within 1e-4 relative, not bit for bit: the cuda
# backend scatter-adds word and token-type embedding gradients with atomics, so two runs of the
# same process already differ in the last bits (backend/cuda.cu's header). Run by
# scripts/run-tests --gpu (make test-gpu); skips with the reason where there is no GPU, too few
# GPUs, or no mpirun.
load ../bats/test_helper

setup() {
  TMP=$(mktemp -d "${BATS_TMPDIR:-/tmp}/bp.XXXXXX")
  command -v mpirun >/dev/null 2>&1 || skip "no mpirun (Debian's openmpi-bin)"
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 || skip "no GPU (nvidia-smi -L)"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0:protect_shadow_gap=0"
  OPTS="--preset tiny --dropout 0 --device cuda --lr 5e-4 --warmup-steps 3 --vocab $VOCAB"
}

# Parameters of two saved models within 1e-4 of the largest (the attention key bias aside)
params_close() { # a.safetensors b.safetensors
  python3 - "$1" "$2" <<'PY'
import json, re, struct, sys
from array import array
def load(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    return {k: array('f', b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]])
            for k, v in json.loads(b[8:8 + n]).items() if k != '__metadata__'}
A, B = load(sys.argv[1]), load(sys.argv[2])
# the attention key bias has a zero true gradient (tests/bats/data_parallel.bats says why)
keys = [k for k in A if not re.search(r'attention\.self\.key\.bias', k)]
scale = max(max(map(abs, A[k])) for k in keys)
diff = max(max(abs(x - y) for x, y in zip(A[k], B[k])) for k in keys)
print("relative %.3g" % (diff / scale))
sys.exit(0 if diff <= 1e-4 * scale else 1)
PY
}

@test "1 rank on the cuda backend sums with NCCL and gives the single process's parameters (1e-4 relative)" {
  batches train 320 16 1 --no-shuffle --out "file:$TMP/b16"
  train --in "file:$TMP/b16" $OPTS --save "$TMP/one" >/dev/null
  BERTPIPE_QUIET=0 mpirun -np 1 train --data-parallel mpi --in "file:$TMP/b16" $OPTS --save "$TMP/nccl" \
    </dev/null 2>"$TMP/err" >/dev/null
  grep -q "data-parallel: 1 ranks (mpi, .*; gradients summed on the device)" "$TMP/err" || { cat "$TMP/err"; false; }
  params_close "$TMP/one/model.safetensors" "$TMP/nccl/model.safetensors"
}

@test "2 ranks on 2 GPUs x 8 rows = 1 GPU x 16 rows after 20 steps (1e-4 relative)" {
  [ "$(nvidia-smi -L | wc -l)" -ge 2 ] || skip "one GPU: NCCL puts one rank on each GPU"
  batches train 320 16 1 --no-shuffle --out "file:$TMP/b16"
  train --in "file:$TMP/b16" $OPTS --save "$TMP/one" >/dev/null
  mpirun -np 2 train --in "file:$TMP/b16" $OPTS --save "$TMP/two" </dev/null >/dev/null
  params_close "$TMP/one/model.safetensors" "$TMP/two/model.safetensors"
}
