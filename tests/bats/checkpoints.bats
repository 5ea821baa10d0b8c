#!/usr/bin/env bats
# Checkpoint files across the language boundary: what bertpipe's C writer produces is read back
# by the Python reference (tests/reference/make_checkpoint_fixtures.py, Debian's python3-torch),
# and broken inputs end the converter with one error line.
load test_helper

FIX="$BERTPIPE_TOP/tests/fixtures/ckpt"

need_torch() {
  /usr/bin/python3 -c 'import torch' 2>/dev/null || skip "no python3-torch at /usr/bin/python3"
}

@test "ckpt_convert turns pytorch_model.bin into a safetensors file Python reads back equal, byte for byte in layout" {
  need_torch
  ckpt_convert "$FIX/pytorch_model.bin" "$TMP/model.safetensors" 2>"$TMP/err"
  run /usr/bin/python3 "$BERTPIPE_TOP/tests/reference/make_checkpoint_fixtures.py" --check "$TMP/model.safetensors" "$FIX"
  [ "$status" -eq 0 ]
  [[ "$output" == "check: OK 13 tensors equal to pytorch_model.bin, layout byte-identical"* ]]
}

@test "ckpt_convert reads the legacy torch format and Google's TF checkpoint" {
  need_torch
  ckpt_convert "$FIX/pytorch_model_legacy.bin" "$TMP/legacy.safetensors" 2>"$TMP/err"
  run /usr/bin/python3 "$BERTPIPE_TOP/tests/reference/make_checkpoint_fixtures.py" --check "$TMP/legacy.safetensors" "$FIX"
  [ "$status" -eq 0 ]
  ckpt_convert "$FIX/tf" "$TMP/tf.safetensors" 2>"$TMP/err"
  refute_sanitizer "$TMP/err"
  [ -s "$TMP/tf.safetensors" ]
}

@test "ckpt_convert on a truncated checkpoint prints one error line naming the file and writes nothing" {
  head -c 3000 "$FIX/pytorch_model.bin" >"$TMP/cut.bin"
  run ckpt_convert "$TMP/cut.bin" "$TMP/out.safetensors"
  [ "$status" -ne 0 ]
  [ ! -e "$TMP/out.safetensors" ]
  ckpt_convert "$TMP/cut.bin" "$TMP/out.safetensors" 2>"$TMP/err" || true
  assert_one_error_line "$TMP/err" ckpt_convert
  grep -q "cut.bin" "$TMP/err"
  [ -z "$(ls "$TMP" | grep '\.tmp\.')" ]
}
