#!/usr/bin/env bats
# bertpipe plot (scripts/plot) on a real run of the embedded default and on a QA run folder of
# ours: every picture is a whole PNG/SVG of the asked size, every data file holds exactly the
# numbers of the metrics it came from, and the pipelines draw at their end unless --no-plot.
load test_helper

PLOT=$BERTPIPE_TOP/scripts/plot

# One real classification run for the whole file (the sanitizer build of the stages).
setup_file() {
  export BERTPIPE_BIN
  "$BERTPIPE_TOP/pipelines/sst" --epochs 2 --out "$BATS_FILE_TMPDIR/run" 2>"$BATS_FILE_TMPDIR/run.err"
}

# A copy of that run without its pictures, so each test draws its own.
fresh_run() { # dir
  mkdir -p "$1"
  cp "$BATS_FILE_TMPDIR/run/train-metrics.jsonl" "$BATS_FILE_TMPDIR/run/metrics.json" "$1/"
}

# "WIDTHxHEIGHT" of a PNG whose signature, IHDR chunk and IEND trailer are all in place.
png_size() {
  [ "$(od -An -tx1 -N8 "$1" | tr -d ' \n')" = 89504e470d0a1a0a ] || { echo "not a PNG: $1" >&2; return 1; }
  [ "$(dd if="$1" bs=1 skip=12 count=4 2>/dev/null)" = IHDR ] || { echo "no IHDR: $1" >&2; return 1; }
  [ "$(tail -c 8 "$1" | head -c 4)" = IEND ] || { echo "cut short (no IEND): $1" >&2; return 1; }
  od -An -tu1 -j16 -N8 "$1" | awk '{ printf "%dx%d\n", $1*16777216 + $2*65536 + $3*256 + $4, $5*16777216 + $6*65536 + $7*256 + $8 }'
}

# "WIDTHxHEIGHT" of an SVG that parses as XML with an svg root.
svg_size() {
  python3 - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
print(f"{root.get('width')}x{root.get('height')}")
PY
}

# check_data RUN_DIR <<PY: run python checks with the run's numbers at hand: scope(S) is its
# metric frames of scope S, rows(NAME) the rows of plots/NAME.dat split into columns.
check_data() {
  python3 -c 'import json, sys
d = sys.argv[1]
frames = [json.loads(l) for l in open(f"{d}/train-metrics.jsonl")]
def scope(s): return [f for f in frames if f.get("k") == "metric" and f.get("scope") == s]
def rows(name): return [l.split() for l in open(f"{d}/plots/{name}.dat") if not l.startswith("#")]
'"$(cat)" "$1"
}

assert_pictures() { # dir size name...
  local dir=$1 size=$2 name
  shift 2
  for name in "$@"; do
    [ "$(png_size "$dir/$name.png")" = "$size" ] || { echo "$name.png: $(png_size "$dir/$name.png")" >&2; return 1; }
    [ "$(svg_size "$dir/$name.svg")" = "$size" ] || { echo "$name.svg: $(svg_size "$dir/$name.svg")" >&2; return 1; }
  done
}

@test "the pipeline drew every picture of its run into OUT/plots at its end" {
  refute_sanitizer "$BATS_FILE_TMPDIR/run.err"
  grep -q "^sst: plots in $BATS_FILE_TMPDIR/run/plots$" "$BATS_FILE_TMPDIR/run.err"
  assert_pictures "$BATS_FILE_TMPDIR/run/plots" 800x500 loss lr grad_norm eval confusion
}

@test "train.dat holds each train frame's step, epoch, loss, lr and grad_norm, and the bias-corrected EMA" {
  fresh_run "$TMP/r"
  run "$PLOT" --smooth 0.8 "$TMP/r"
  [ "$status" -eq 0 ]
  check_data "$TMP/r" <<'PY'
train, table = scope("train"), rows("train")
assert len(train) > 50 and len(table) == len(train), (len(table), len(train))
ema, n = 0.0, 0
for f, r in zip(train, table):
    assert int(r[0]) == f["step"] and int(r[1]) == f["epoch"], (r, f)
    for col, key in ((2, "loss"), (4, "lr"), (5, "grad_norm")):
        assert float(r[col]) == f[key], (key, r[col], f[key])   # exactly: the text round-trips
    ema, n = 0.8 * ema + 0.2 * f["loss"], n + 1
    assert abs(float(r[3]) - ema / (1 - 0.8 ** n)) <= 1e-12, (r[3], ema / (1 - 0.8 ** n))
PY
}

@test "eval.dat holds each epoch's eval frame and confusion.dat score's confusion matrix" {
  fresh_run "$TMP/r"
  run "$PLOT" "$TMP/r"
  [ "$status" -eq 0 ]
  check_data "$TMP/r" <<'PY'
evals, table = scope("eval"), rows("eval")
assert len(evals) == 2 and len(table) == 2, (evals, table)
for f, r in zip(evals, table):
    assert [int(r[0]), int(r[1])] == [f["epoch"], f["step"]], (r, f)
    assert [float(x) for x in r[2:]] == [f["loss"], f["accuracy"], f["macro_f1"]], (r, f)
matrix = json.load(open(f"{d}/metrics.json"))["confusion_matrix"]
cells = [[int(x) for x in r] for r in rows("confusion")]
want = [[t, p, c] for t, row in enumerate(matrix) for p, c in enumerate(row)]
assert cells == want, (cells, want)
assert sum(c for _, _, c in cells) == 400
PY
  head -1 "$TMP/r/plots/confusion.dat" | grep -q 'classes: negative, positive'
}

@test "--out and --size put pictures of that size elsewhere and leave the run folder as it was" {
  fresh_run "$TMP/r"
  before=$(ls -R "$TMP/r" | md5sum)
  run "$PLOT" --out "$TMP/pictures" --size 640x400 "$TMP/r"
  [ "$status" -eq 0 ]
  [ "$(ls -R "$TMP/r" | md5sum)" = "$before" ]
  assert_pictures "$TMP/pictures" 640x400 loss lr grad_norm eval confusion
  [ -s "$TMP/pictures/train.dat" ] && [ -s "$TMP/pictures/plots.gp" ]
  [ -z "$(ls -A "$TMP/pictures" | grep '^\.plot')" ]
}

@test "a QA run draws EM and F1 from metrics.json at its last epoch, and no confusion matrix" {
  mkdir -p "$TMP/qa"
  {
    echo '{"v":1,"k":"hello","from":"train","task":"qa","total_steps":4}'
    for s in 1 2 3 4; do
      echo "{\"v\":1,\"k\":\"metric\",\"seq\":$((s - 1)),\"scope\":\"train\",\"step\":$s,\"epoch\":$(( (s + 1) / 2 )),\"loss\":$((6 - s)).5,\"lr\":0.00$((5 - s)),\"grad_norm\":1.$s}"
    done
    echo '{"v":1,"k":"eos","from":"train","count":4}'
  } >"$TMP/qa/train-metrics.jsonl"
  echo '{"version":"1.1","exact_match":61.5,"f1":70.25,"total":13}' >"$TMP/qa/metrics.json"
  run "$PLOT" "$TMP/qa"
  [ "$status" -eq 0 ]
  assert_pictures "$TMP/qa/plots" 800x500 loss lr grad_norm eval
  [ ! -e "$TMP/qa/plots/confusion.png" ] && [ ! -e "$TMP/qa/plots/confusion.dat" ]
  head -1 "$TMP/qa/plots/eval.dat" | grep -q '^# epoch step loss exact_match f1'
  [ "$(grep -v '^#' "$TMP/qa/plots/eval.dat")" = "$(printf '2\t4\tNaN\t61.5\t70.25')" ]
  [ "$(grep -v '^#' "$TMP/qa/plots/train.dat" | cut -f1,3,5,6 | tr '\t\n' ' ')" = "1 5.5 0.004 1.1 2 4.5 0.003 1.2 3 3.5 0.002 1.3 4 2.5 0.001 1.4 " ]
}

@test "two runs are overlaid into --out, and each gets its own pictures" {
  fresh_run "$TMP/a"
  fresh_run "$TMP/b"
  run "$PLOT" --out "$TMP/cmp" "$TMP/a" "$TMP/b"
  [ "$status" -eq 0 ]
  assert_pictures "$TMP/cmp" 800x500 compare-loss compare-lr compare-grad_norm compare-eval
  assert_pictures "$TMP/a/plots" 800x500 loss eval confusion
  assert_pictures "$TMP/b/plots" 800x500 loss eval confusion
  grep -q "$TMP/a/plots/train.dat" "$TMP/cmp/plots.gp"
  grep -q "$TMP/b/plots/eval.dat" "$TMP/cmp/plots.gp"
}

@test "usage errors exit 2 with one line: no run, two runs without --out, a bad --smooth or --size" {
  fresh_run "$TMP/r"
  for args in "" "$TMP/r $TMP/r" "--smooth 1 $TMP/r" "--smooth x $TMP/r" "--size 800 $TMP/r" "--bogus $TMP/r"; do
    # shellcheck disable=SC2086
    "$PLOT" $args 2>"$TMP/err" && { echo "accepted: $args" >&2; false; }
    [ $? -eq 2 ] || { echo "status for '$args' was not 2" >&2; false; }
    assert_one_error_line "$TMP/err" plot
  done
}

@test "a folder that is no run, or a gnuplot that fails, is one error line and leaves no pictures" {
  mkdir -p "$TMP/empty"
  run "$PLOT" "$TMP/empty"
  [ "$status" -eq 1 ]
  [ "$output" = "plot: error: no train-metrics.jsonl or metrics.json: not a run folder ($TMP/empty)" ]
  fresh_run "$TMP/r"
  BERTPIPE_GNUPLOT=false "$PLOT" "$TMP/r" 2>"$TMP/err" && false
  assert_one_error_line "$TMP/err" plot
  grep -q 'gnuplot failed' "$TMP/err"
  [ -z "$(ls -A "$TMP/r/plots")" ]
  BERTPIPE_GNUPLOT=$TMP/no-gnuplot "$PLOT" "$TMP/r" 2>"$TMP/err" && false
  assert_one_error_line "$TMP/err" plot
  grep -q 'gnuplot not found' "$TMP/err"
}

@test "a pipeline without gnuplot warns in one line and succeeds; --no-plot draws nothing" {
  export BERTPIPE_BIN
  BERTPIPE_GNUPLOT=$TMP/no-gnuplot "$BERTPIPE_TOP/pipelines/sst" --epochs 1 --out "$TMP/w" 2>"$TMP/err"
  [ -s "$TMP/w/metrics.json" ]
  [ "$(grep -c 'plot' "$TMP/err")" -eq 1 ]
  grep -q '^sst: warning: no plots: gnuplot not found' "$TMP/err"
  "$BERTPIPE_TOP/pipelines/sst" --epochs 1 --no-plot --out "$TMP/n" 2>"$TMP/err"
  [ -s "$TMP/n/metrics.json" ]
  [ ! -e "$TMP/n/plots" ]
  run grep -c plot "$TMP/err"
  [ "$output" = 0 ]
  refute_sanitizer "$TMP/err"
}

@test "the pictures the README and docs/tool.md show are committed, whole PNGs of 800x500" {
  n=0
  for doc in README.md docs/tool.md; do
    for img in $(grep -oE '(docs/)?images/[a-z_]+\.png' "$BERTPIPE_TOP/$doc" | sort -u); do
      path=$BERTPIPE_TOP/docs/${img#docs/}
      git -C "$BERTPIPE_TOP" ls-files --error-unmatch "${path#"$BERTPIPE_TOP"/}" >/dev/null 2>&1 ||
        { echo "$doc shows $img, which is not committed" >&2; false; }
      [ "$(png_size "$path")" = 800x500 ] || { echo "$img: $(png_size "$path")" >&2; false; }
      n=$((n + 1))
    done
  done
  [ "$n" -ge 9 ]   # README: loss, eval, lr, confusion; tool.md: those and grad_norm
}
