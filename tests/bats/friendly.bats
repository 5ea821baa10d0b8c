#!/usr/bin/env bats
# What makes bertpipe pleasant to use (issue 17), each as a behaviour a user sees: usage
# errors on every stage (--version on every stage is tool.bats'), progress in a log and on a
# terminal, readable frame streams, and the small frictions (a missing file named, typos in
# the environment refused, a hint when a model answers one class, true save messages, output
# files 0644).
load test_helper

stage_names() { (cd "$BERTPIPE_TOP/stages" && ls ./*.c | sed 's|^\./||; s/\.c$//'); }

# A default sst run of one epoch into $TMP/o, its stderr in $TMP/err (a file: not a terminal).
sst_run() { "$BERTPIPE_TOP/pipelines/sst" --epochs 1 --no-plot --out "$TMP/o" "$@" 2>"$TMP/err"; }

# ---- --version and usage ------------------------------------------------------------------

@test "a usage error in every stage: the synopsis and one error line on stderr, nothing on stdout, status 2" {
  for s in $(stage_names); do
    run bash -c "'$BERTPIPE_BIN/$s' --no-such-option >'$TMP/out' 2>'$TMP/err'"
    [ "$status" -eq 2 ] || { echo "$s: status $status" >&2; false; }
    [ ! -s "$TMP/out" ]
    grep -q "^usage: $s " "$TMP/err" || { echo "$s: no synopsis:" >&2; cat "$TMP/err" >&2; false; }
    [ "$(grep -c "^$s: error: " "$TMP/err")" -eq 1 ]
    [[ "$(tail -1 "$TMP/err")" == "$s: error: bad usage (see $s --help)" ]]
    # --help itself is the answer asked for: stdout, status 0
    run bash -c "'$BERTPIPE_BIN/$s' --help 2>'$TMP/err'"
    [ "$status" -eq 0 ] && [[ "${lines[0]}" == "usage: $s "* ]] && [ ! -s "$TMP/err" ]
    [[ "$output" == *"--version"* ]] || { echo "$s --help lacks --version" >&2; false; }
  done
  run tokenize extra-argument
  [ "$status" -eq 2 ] && [[ "${lines[0]}" == "usage: tokenize "* ]]
  [ "${lines[-1]}" = "tokenize: error: unexpected argument 'extra-argument' (see tokenize --help)" ]
}

@test "predict-sst and predict-squad with no arguments: the usage on stderr, status 2" {
  for p in predict-sst predict-squad; do
    run bash -c "'$BERTPIPE_TOP/pipelines/$p' </dev/null >'$TMP/out' 2>'$TMP/err'"
    [ "$status" -eq 2 ] || { echo "$p: status $status" >&2; false; }
    [ ! -s "$TMP/out" ] && grep -q "^$p: error: " "$TMP/err" && grep -qi "usage\|pipelines/$p" "$TMP/err"
  done
}

# ---- progress -----------------------------------------------------------------------------

@test "a pipeline logging to a file prints a progress line every BERTPIPE_PROGRESS_EVERY seconds" {
  # 3 epochs (189 steps) at a line every 0.2 s: a quiet machine trains them in a few seconds, so
  # there are lines to see, and a loaded one still prints far fewer lines than steps
  BERTPIPE_QUIET=0 BERTPIPE_PROGRESS_EVERY=0.2 "$BERTPIPE_TOP/pipelines/sst" --epochs 3 --no-plot --out "$TMP/o" 2>"$TMP/err"
  # train: step/total, rate, elapsed<ETA, epoch, loss and lr, each line whole
  re='^train: train \[[#.]+\] [0-9]+/[0-9]+ [0-9.]+/s [0-9:]+<[0-9:?]+ epoch [1-3]/3 loss [0-9.]+ lr [0-9.e+-]+$'
  n=$(grep -cE "$re" "$TMP/err" || true)
  [ "$n" -ge 2 ] || { echo "$n train progress lines:" >&2; cat "$TMP/err" >&2; false; }
  # the lines are periodic, not per step: far fewer than the steps
  steps=$(grep -oE '[0-9]+ steps \([0-9]+ per epoch' "$TMP/err" | grep -oE '^[0-9]+' | head -1)
  [ "$steps" -eq 189 ]
  [ "$n" -lt "$steps" ]
  ! grep -q $'\r' "$TMP/err"
}

@test "without BERTPIPE_PROGRESS_EVERY a log gets no progress line in a run shorter than 10 s" {
  make_batches
  start=$(date +%s)
  BERTPIPE_QUIET=0 train --in "file:$TMP/b.batches" --preset tiny --vocab "$VOCAB" --threads 1 --max-steps 2 >/dev/null 2>"$TMP/err"
  [ $(( $(date +%s) - start )) -ge 10 ] && skip "the machine is too slow to tell"
  ! grep -q '^train: train \[' "$TMP/err"
}

@test "eval's progress has a total and an ETA, from the batch stream's hello" {
  make_batches
  train --in "file:$TMP/b.batches" --preset tiny --vocab "$VOCAB" --threads 1 --max-steps 1 --save "$TMP/model" >/dev/null 2>&1
  BERTPIPE_PROGRESS=1 "$BERTPIPE_BIN/eval" --checkpoint "$TMP/model" --in "file:$TMP/b.batches" --threads 1 >/dev/null 2>"$TMP/err"
  grep -qE '^eval: eval \[#+\] 3/3 [0-9.]+/s [0-9:]+<[0-9:]+ batches, 12 sequences$' "$TMP/err" ||
    { cat "$TMP/err" >&2; false; }
}

@test "batch's progress counts batches, not the epoch frames between them" {
  examples train 12 | json2frames | tokenize --vocab "$VOCAB" --max-length 40 >"$TMP/f.frames"
  BERTPIPE_PROGRESS=1 batch --batch-size 4 --epochs 2 <"$TMP/f.frames" 2>"$TMP/err" >/dev/null
  grep -qE '^batch: batch \[#+\] 6/6 [0-9.]+/s ' "$TMP/err" || { cat "$TMP/err" >&2; false; }
}

@test "BERTPIPE_QUIET=1 keeps each epoch's summary and the final metrics, and shows no progress" {
  BERTPIPE_QUIET=1 BERTPIPE_PROGRESS_EVERY=1 sst_run
  grep -qE '^train: epoch 1 step [0-9]+ eval: loss [0-9.]+ accuracy [0-9.]+ macro-F1' "$TMP/err"
  grep -qE '^train: epoch 1 done at step [0-9]+: train loss' "$TMP/err"
  grep -qE '^sst: done in [0-9]+ s: accuracy [0-9.]+ on validation' "$TMP/err"
  ! grep -qE '^(train|batch|eval): (train|batch|eval) ' "$TMP/err"
}

@test "on a terminal (script's pty) no two status lines, nor a log line, share a line" {
  command -v script >/dev/null || skip "no script(1)"
  cd "$TMP"
  mkdir "$TMP/scratch"
  TMPDIR=$TMP/scratch BERTPIPE_QUIET=0 script -qfec "'$BERTPIPE_TOP/pipelines/sst' --epochs 1 --no-plot --out '$TMP/o'" \
    "$TMP/screen" >/dev/null
  grep -q '"accuracy": ' "$TMP/o/metrics.json"
  python3 - "$TMP/screen" <<'PY'
import re, sys
raw = open(sys.argv[1], 'rb').read().decode('utf-8', 'replace')
drawing = re.compile(r'(?:(?:batch|train|eval): (?:batch|train|eval) (?:\[|[0-9])|[a-z0-9]+: frames in [0-9])')
lines = raw.split('\n')
shown = 0
for n, line in enumerate(lines):
    text = re.sub(r'\x1b\[[0-9;]*[A-Za-z]', '', line).replace('\r', '')
    found = drawing.findall(text)
    shown += len(found)
    if len(found) > 1 or (found and not drawing.match(text)):
        sys.exit(f'line {n} mixes drawings: {line!r}')
if shown < 1:
    sys.exit('no progress drawn:\n' + raw[-2000:])
PY
  # the pipeline's last line came through the drawer, and the run left no folder (status files, pipe)
  grep -q 'sst: done in' "$TMP/screen"
  [ -z "$(ls -A "$TMP/scratch")" ]
}

# ---- readable streams ---------------------------------------------------------------------

@test "frames2json --vocab shows tokens identical to the vocabulary's lines, for features and batches" {
  examples train 5 | json2frames | tokenize --vocab "$VOCAB" --max-length 40 >"$TMP/f.frames"
  frames2json --vocab "$VOCAB" --arrays <"$TMP/f.frames" >"$TMP/view.jsonl"
  frames2json <"$TMP/f.frames" >"$TMP/plain.jsonl"
  batch --batch-size 2 --no-shuffle <"$TMP/f.frames" | frames2json --vocab "$VOCAB" >"$TMP/batches.jsonl"
  python3 - "$VOCAB" "$TMP/view.jsonl" "$TMP/plain.jsonl" "$TMP/batches.jsonl" <<'PY'
import base64, json, struct, sys
vocab = open(sys.argv[1], encoding='utf-8').read().split('\n')
view = [json.loads(l) for l in open(sys.argv[2])]
plain = [json.loads(l) for l in open(sys.argv[3])]
checked = 0
for v, p in zip(view, plain):
    if v['k'] != 'feature': continue
    raw = base64.b64decode(p['input_ids']['data']['$bin'])
    ids = list(struct.unpack('<%di' % (len(raw) // 4), raw))
    assert v['input_ids']['data'] == ids, (v['input_ids'], ids)          # --arrays: the same numbers
    assert v['tokens'] == [vocab[i] for i in ids], (v['tokens'], ids)    # --vocab: the vocab's lines
    assert 'tokens' not in p
    checked += 1
assert checked == 5, checked
for b in map(json.loads, open(sys.argv[4])):
    if b['k'] != 'batch': continue
    raw = base64.b64decode(b['input_ids']['data']['$bin'])
    rows, cols = b['input_ids']['shape']
    ids = struct.unpack('<%di' % (rows * cols), raw)
    assert b['tokens'] == [[vocab[i] for i in ids[r * cols:(r + 1) * cols]] for r in range(rows)]
    checked += 1
assert checked == 8, checked
PY
}

@test "tap --vocab and --arrays show the same view, and tap --log starts the file again unless --append" {
  examples train 2 | json2frames | tokenize --vocab "$VOCAB" --max-length 40 >"$TMP/f.frames"
  frames2json --vocab "$VOCAB" --arrays <"$TMP/f.frames" >"$TMP/want.jsonl"
  tap --vocab "$VOCAB" --arrays --log "$TMP/tap.jsonl" <"$TMP/f.frames" | cmp - "$TMP/f.frames"
  cmp "$TMP/want.jsonl" "$TMP/tap.jsonl"
  tap --log "$TMP/tap.jsonl" <"$TMP/f.frames" >/dev/null
  [ "$(wc -l <"$TMP/tap.jsonl")" -eq 4 ]
  tap --append --log "$TMP/tap.jsonl" <"$TMP/f.frames" >/dev/null
  [ "$(wc -l <"$TMP/tap.jsonl")" -eq 8 ]
  run tap --append
  [ "$status" -eq 2 ] && [ "${lines[-1]}" = "tap: error: --append needs --log FILE (see tap --help)" ]
}

# QA examples in $TMP/ex.frames: 6 of the default validation set and two written here whose
# contexts hold letters of two bytes in UTF-8 before the answer (so byte and code-point offsets
# differ), and their features (48 tokens, stride 16: several windows each) in $TMP/f.frames.
qa_fixture() {
  extract --sample 6 "$BERTPIPE_TOP/pipelines/default/squad-validation.json" 2>/dev/null | frames2json | sed '$d' >"$TMP/ex.jsonl"
  python3 - >>"$TMP/ex.jsonl" <<'PY'
import json
for n, (ctx, q, a) in enumerate([
        ('Zoë Müller was born in Köln in 1970. Later Zoë moved to Malmö, where she played the organ.', 'Where was Zoë Müller born?', 'Köln'),
        ('Ångström and Chloé Dvořák met in Zürich; the symphonies of Dvořák were made in Praha in 1890.', 'Where were the symphonies made?', 'Praha')]):
    print(json.dumps({"v": 1, "k": "example", "seq": 6 + n, "example_id": "utf8-%d" % n, "split": "train", "title": "t",
                      "question": q, "context": ctx, "answers": [{"text": a, "answer_start": ctx.index(a)}]}, ensure_ascii=False))
print(json.dumps({"v": 1, "k": "eos", "from": "test", "count": 0}))
PY
  json2frames --recount "$TMP/ex.jsonl" >"$TMP/ex.frames"
  tokenize --vocab "$VOCAB" --max-length 48 --doc-stride 16 <"$TMP/ex.frames" >"$TMP/f.frames" 2>/dev/null
}

@test "frames2json --vocab --examples: each offset pair's span is its context's text, and its token's, in code points" {
  qa_fixture
  frames2json <"$TMP/ex.frames" >"$TMP/examples.jsonl"
  frames2json --vocab "$VOCAB" --examples "file:$TMP/ex.frames" --arrays <"$TMP/f.frames" >"$TMP/view.jsonl"
  batch --batch-size 3 --no-shuffle <"$TMP/f.frames" | frames2json --vocab "$VOCAB" --examples "file:$TMP/ex.frames" --arrays >"$TMP/batches.jsonl"
  python3 - "$TMP/examples.jsonl" "$TMP/view.jsonl" "$TMP/batches.jsonl" <<'PY'
import json, sys, unicodedata
ctx = {e['example_id']: e['context'] for e in map(json.loads, open(sys.argv[1])) if e['k'] == 'example'}
def plain(text):   # what an uncased vocabulary holds: lowercase, accents stripped (BertTokenizerFast)
    return ''.join(c for c in unicodedata.normalize('NFD', text.lower()) if unicodedata.category(c) != 'Mn')
checked = shifted = 0
def check_row(example_id, tokens, offsets, spans):
    global checked, shifted
    text = ctx[example_id]
    assert len(spans) == len(offsets) == len(tokens)
    for tok, (start, end), span in zip(tokens, offsets, spans):
        if start < 0:
            assert span is None, (tok, start, end, span)      # outside the context: the question, specials, padding
            continue
        assert span == text[start:end], (example_id, tok, start, end, span)   # code points of the context
        if tok != '[UNK]':
            assert plain(span) == (tok[2:] if tok.startswith('##') else tok), (example_id, tok, span)
        checked += 1
        shifted += len(text[:start].encode()) != start         # a byte offset would differ here
rows = 0
for f in map(json.loads, open(sys.argv[2])):
    if f['k'] != 'feature': continue
    check_row(f['example_id'], f['tokens'], f['offsets']['data'], f['spans'])
    rows += 1
assert rows >= 10 and checked > 200 and shifted > 20, (rows, checked, shifted)
batched = 0
for b in map(json.loads, open(sys.argv[3])):
    if b['k'] != 'batch': continue
    for i, example_id in enumerate(b['example_ids']):
        check_row(example_id, b['tokens'][i], b['offsets']['data'][i], b['spans'][i])
        batched += 1
assert batched == rows, (batched, rows)
PY
  # tap shows the same view
  tap --vocab "$VOCAB" --examples "file:$TMP/ex.frames" --arrays --log "$TMP/tap.jsonl" <"$TMP/f.frames" | cmp - "$TMP/f.frames"
  cmp "$TMP/view.jsonl" "$TMP/tap.jsonl"
}

@test "spans come from the examples earlier in the stream too, and without --vocab or a known example there are none" {
  qa_fixture
  frames2json --vocab "$VOCAB" --examples "file:$TMP/ex.frames" <"$TMP/f.frames" | grep '"k":"feature"' >"$TMP/want.jsonl"
  # one stream: the examples, then their features (one hello, one eos)
  { frames2json <"$TMP/ex.frames" | sed '$d'; frames2json <"$TMP/f.frames" | sed '1d'; } | json2frames --recount >"$TMP/both.frames"
  frames2json --vocab "$VOCAB" <"$TMP/both.frames" | grep '"k":"feature"' >"$TMP/got.jsonl"
  cmp "$TMP/want.jsonl" "$TMP/got.jsonl"
  [ "$(grep -c '"spans":\[' "$TMP/got.jsonl")" -eq "$(wc -l <"$TMP/got.jsonl")" ]
  # a feature before its example (here: no example at all) and a plain view get no spans
  ! frames2json --vocab "$VOCAB" <"$TMP/f.frames" | grep -q '"spans"'
  ! frames2json <"$TMP/both.frames" | grep -q '"spans"'
  grep -q '"spans":\[null,' "$TMP/got.jsonl"    # [CLS] and the question are outside the context
}

# ---- frictions ----------------------------------------------------------------------------

@test "extract on a missing path says no such file, naming it" {
  run extract /nonexistent/train.tsv
  [ "$status" -eq 1 ]
  [ "$output" = "extract: error: no such file or folder (/nonexistent/train.tsv)" ]
}

@test "a typo in BERTPIPE_TAP_AFTER or in a BERTPIPE_<STAGE> name stops the pipeline: one line, status 2" {
  BERTPIPE_TAP_AFTER=tokenize,tokenise run "$BERTPIPE_TOP/pipelines/sst" --out "$TMP/o"
  [ "$status" -eq 2 ]
  [ "${#lines[@]}" -eq 1 ] && [[ "$output" == "sst: error: BERTPIPE_TAP_AFTER names 'tokenise', which is no stage (stages: extract, "* ]]
  BERTPIPE_TOKENISE=cat run "$BERTPIPE_TOP/pipelines/squad" --out "$TMP/o"
  [ "$status" -eq 2 ]
  [ "${#lines[@]}" -eq 1 ] && [[ "$output" == "squad: error: BERTPIPE_TOKENISE replaces no stage and is no setting"* ]]
  [ ! -e "$TMP/o" ]
  BERTPIPE_TOKENISE=cat run "$BERTPIPE_TOP/pipelines/predict-sst" "$TMP/none"
  [ "$status" -eq 2 ]
}

@test "lib.sh's list of stages is stages/, and its settings are every BERTPIPE_ name the sources read" {
  got=$(bash -c "source '$BERTPIPE_TOP/pipelines/lib.sh'; printf '%s\n' \$BP_STAGE_NAMES" | sort)
  [ "$got" = "$(stage_names | sort)" ]
  settings=$(bash -c "source '$BERTPIPE_TOP/pipelines/lib.sh'; printf '%s\n' \$BP_ENV_SETTINGS" | sort)
  read_names=$(cd "$BERTPIPE_TOP" && grep -rhoE 'getenv\("BERTPIPE_[A-Z0-9_]+|\$\{?BERTPIPE_[A-Z0-9_]+' common stages pipelines scripts |
    sed -E 's/.*BERTPIPE_//' | sort -u)
  for name in $read_names; do
    grep -qx "$name" <<<"$settings" && continue
    lower=${name,,}
    grep -qx "${lower//_/-}" <<<"$got" || { echo "BERTPIPE_$name is read but lib.sh would refuse it" >&2; false; }
  done
}

@test "score: predictions that are all one class get a one-line hint" {
  printf '%s\n' '{"v":1,"k":"hello","from":"t","task":"classification","labels":["neg","pos"]}' \
    '{"v":1,"k":"prediction","seq":0,"example_id":"a","label":1,"gold":1}' \
    '{"v":1,"k":"prediction","seq":1,"example_id":"b","label":1,"gold":0}' \
    '{"v":1,"k":"prediction","seq":2,"example_id":"c","label":1,"gold":0}' \
    '{"v":1,"k":"eos","from":"t","count":3}' | json2frames | score >/dev/null 2>"$TMP/err"
  [ "$(grep -c 'all 3 predictions are pos' "$TMP/err")" -eq 1 ]
  grep -q '^score: warning: all 3 predictions are pos: .*try a lower --lr or more epochs$' "$TMP/err"
  printf '%s\n' '{"v":1,"k":"hello","from":"t","task":"classification","labels":["neg","pos"]}' \
    '{"v":1,"k":"prediction","seq":0,"example_id":"a","label":1,"gold":1}' \
    '{"v":1,"k":"prediction","seq":1,"example_id":"b","label":0,"gold":0}' \
    '{"v":1,"k":"eos","from":"t","count":2}' | json2frames | score >/dev/null 2>"$TMP/err"
  ! grep -q 'predictions are' "$TMP/err"
}

@test "train says why it saved: --max-steps in mid-epoch is the end of training, not of an epoch" {
  make_batches
  BERTPIPE_QUIET=0 train --in "file:$TMP/b.batches" --preset tiny --vocab "$VOCAB" --threads 1 --max-steps 1 \
    --save "$TMP/model" >/dev/null 2>"$TMP/err"
  grep -q 'saved .*checkpoint-1 at step 1 (end of training' "$TMP/err" || { cat "$TMP/err" >&2; false; }
  ! grep -q 'end of epoch' "$TMP/err"
}

@test "predictions, metrics and recorded streams are written 0644 under umask 022" {
  umask 022
  sst_run
  for f in predictions.tsv metrics.json train-metrics.jsonl validation.batches run_config.json model/config.json; do
    [ "$(stat -c %a "$TMP/o/$f")" = 644 ] || { echo "$f: $(stat -c %a "$TMP/o/$f")" >&2; false; }
  done
}

@test "sst --help says a fresh model on --data needs --vocab, and the pipeline says so too" {
  run "$BERTPIPE_TOP/pipelines/sst" --help
  grep -A1 -E -- '^ +--vocab FILE' <<<"$output" | grep -q 'with --data, a fresh model needs it'
  head -3 "$BERTPIPE_TOP/pipelines/default/sentiment-train.tsv" >"$TMP/d.tsv"
  run "$BERTPIPE_TOP/pipelines/sst" --data "$TMP/d.tsv" --out "$TMP/o"
  [ "$status" -eq 2 ] && [[ "$output" == *"a fresh model needs --vocab FILE"* ]]
}

# Three batches of 4 (12 default training sentences) in $TMP/b.batches.
make_batches() {
  examples train 12 | json2frames | tokenize --vocab "$VOCAB" --max-length 40 | batch --batch-size 4 --no-shuffle \
    --out "file:$TMP/b.batches"
}
