# test_helper.bash — shared setup for bertpipe's bats tests.
# Stages come from $BERTPIPE_BIN (the ASan/UBSan build under `make test`), test tools from
# build/tools. Each test gets its own temp dir; ipc sockets live there too.

: "${BERTPIPE_TOP:=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)}"
: "${BERTPIPE_BIN:=$BERTPIPE_TOP/build/san/bin}"
export PATH="$BERTPIPE_BIN:$BERTPIPE_TOP/build/tools:$PATH"
export BERTPIPE_QUIET=1
unset OPENBLAS_CORETYPE

setup() {
  TMP=$(mktemp -d "${BATS_TMPDIR:-/tmp}/bp.XXXXXX")
}

teardown() {
  # Never leave a background stage behind.
  jobs -p | xargs -r kill -9 2>/dev/null || true
  rm -rf "$TMP"
}

# A free TCP port on loopback.
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "$p"; return; fi
  done
  return 1
}

# Fail with stderr shown when a sanitizer reported anything.
refute_sanitizer() {
  if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$@"; then
    cat "$@" >&2
    return 1
  fi
}

# The error output is exactly one line in the bertpipe format.
assert_one_error_line() { # file stage
  local n
  n=$(wc -l <"$1")
  [ "$n" -eq 1 ] || { echo "expected one line, got $n:" >&2; cat "$1" >&2; return 1; }
  grep -qE "^$2: error: .+" "$1" || { cat "$1" >&2; return 1; }
}

# ---- small classification streams from the embedded default data set ----------------------
: "${VOCAB:=$BERTPIPE_TOP/pipelines/default/vocab.txt}"

# example frames (JSON lines) from the first N rows of a default split
examples() { # split N
  awk -F'\t' -v n="$2" -v sp="$1" '
    BEGIN { print "{\"v\":1,\"k\":\"hello\",\"from\":\"test\",\"task\":\"classification\",\"labels\":[\"negative\",\"positive\"],\"num_labels\":2}" }
    NR > 1 && NR <= n + 1 {
      gsub(/"/, "\\\"", $1)
      printf "{\"v\":1,\"k\":\"example\",\"seq\":%d,\"example_id\":\"%s-%d\",\"text\":\"%s\",\"label\":%d}\n", NR - 2, sp, NR - 2, $1, ($2 == "positive")
      count++
    }
    END { printf "{\"v\":1,\"k\":\"eos\",\"from\":\"test\",\"count\":%d}\n", count }
  ' "$BERTPIPE_TOP/pipelines/default/sentiment-$1.tsv"
}

batches() { # split N batch-size epochs [batch args...]
  local split=$1 n=$2 bs=$3 ep=$4; shift 4
  examples "$split" "$n" | json2frames | tokenize --vocab "$VOCAB" --max-length 40 | batch --batch-size "$bs" --epochs "$ep" "$@"
}

# A stand-in for a stage that records its arguments, then runs the real stage: how a test sees
# what a pipeline passed on (BERTPIPE_<STAGE> swaps a stage).
recorder() { # stage -> path of the wrapper
  local w="$TMP/rec-$1"
  printf '#!/bin/sh\nprintf "%%s\\n" "$@" >>"%s.argv"\nexec "%s/%s" "$@"\n' "$w" "$BERTPIPE_BIN" "$1" >"$w"
  chmod +x "$w"
  echo "$w"
}
# The value after OPTION in a recorded argument list (the last one given).
arg_of() { awk -v o="$2" 'prev == o { v = $0 } { prev = $0 } END { if (v == "") exit 1; print v }' "$1"; }
