#!/usr/bin/env bats
# A pipeline on a real terminal (issue 17): the default sst run inside a tmux pane, its
# screen read back with capture-pane while it runs and after. The status block has one line
# per running stage (frames in and out, their rates) and train's progress line under train's;
# no line mixes two stages' outputs; the final metrics are there and the block is gone at the
# end. tmux runs on a private socket (-L), and its server is killed at teardown.
load test_helper

setup() {
  command -v tmux >/dev/null || skip "no tmux (scripts/setup installs it)"
  TMP=$(mktemp -d "${BATS_TMPDIR:-/tmp}/bp.XXXXXX")
  SOCKET=bertpipe-test-$$-$BATS_TEST_NUMBER
  # remain-on-exit: the pane (and its screen) stays when the run ends, until the server goes
  printf 'set -g remain-on-exit on\nset -g history-limit 20000\nset -g status off\n' >"$TMP/tmux.conf"
}

teardown() {
  tmux -L "$SOCKET" kill-server 2>/dev/null || true
  jobs -p | xargs -r kill -9 2>/dev/null || true
  rm -rf "$TMP"
}

# Snapshots of the pane every 0.1 s into $TMP/snap.N until the run prints EXIT=, at most $1 s.
watch_pane() { # seconds
  local n=0 deadline=$((SECONDS + $1))
  while [ $SECONDS -lt $deadline ]; do
    tmux -L "$SOCKET" capture-pane -p -J -t run >"$TMP/snap.$n" || return 1
    grep -q '^EXIT=' "$TMP/snap.$n" && return 0
    n=$((n + 1))
    sleep 0.1
  done
  echo "the run did not end within $1 s" >&2
  return 1
}

@test "on a tmux terminal a run shows one status block: a line per stage with frames in/out, train's line, nothing mixed" {
  mkdir "$TMP/scratch"
  tmux -L "$SOCKET" -f "$TMP/tmux.conf" new-session -d -s run -x 120 -y 40 \
    "env BERTPIPE_QUIET=0 TMPDIR='$TMP/scratch' '$BERTPIPE_TOP/pipelines/sst' --epochs 3 --no-plot --out '$TMP/o'; echo EXIT=\$?"
  watch_pane 600
  tmux -L "$SOCKET" capture-pane -p -J -S - -t run >"$TMP/history"
  grep -q '^EXIT=0$' "$TMP/history" || { cat "$TMP/history" >&2; false; }
  python3 - "$TMP" <<'PY'
import glob, os, re, sys
tmp = sys.argv[1]
stages = 'extract|tokenize|batch|train|eval|postprocess|score|frames2json|json2frames|tap|sst'
counts = re.compile(r'^([a-z0-9]+): frames in ([0-9]+) \(([0-9.]+)/s\) out ([0-9]+) \(([0-9.]+)/s\)$')
bar = re.compile(r'^(batch|train|eval): \1 (\[[#.]+\] )?[0-9]+')
train_bar = re.compile(r'^train: train \[[#.]+\] [0-9]+/[0-9]+ [0-9.]+/s [0-9:]+<[0-9:?]+ epoch [0-9]+/3 loss [0-9.]+ lr [0-9.e+-]+$')
# Another stage's output inside a line: a stage's prefix glued to what came before it, or one
# followed by what only starts a stage's line (counts, a bar, the in/out summaries, an error).
# A prefix after a space is prose ("step 63 eval: loss ..." is train's own line).
glued = re.compile(r'(?<=[^ ])(?:%s): ' % stages)
starts = re.compile(r'(?<=.)\b(%s): (?:frames in |\1 \[|\1 [0-9]|(?:in|out): [0-9]+ frames|error: |warning: )' % stages)

def lines_of(path):
    return [l.rstrip() for l in open(path, encoding='utf-8', errors='replace').read().split('\n')]

def fail(what, path, lines):
    sys.exit('%s (%s):\n%s' % (what, os.path.basename(path), '\n'.join(lines)))

snaps = sorted(glob.glob(tmp + '/snap.*'), key=lambda p: int(p.rsplit('.', 1)[1]))
seen, full = set(), 0
for path in snaps + [tmp + '/history']:
    lines = lines_of(path)
    for l in lines:   # a stage's line starts a line; no line holds a second stage's output
        if glued.search(l) or starts.search(l):
            fail('two outputs mixed in one line: %r' % l, path, lines)
    if path.endswith('history'): break
    while lines and not lines[-1]: lines.pop()
    block = [i for i, l in enumerate(lines) if counts.match(l)]
    if not block: continue
    # the block is the bottom of the screen: below its first line only its own lines
    names = []
    for l in lines[block[0]:]:
        m = counts.match(l)
        if m:
            names.append(m.group(1))
            seen.add(m.group(1))
        elif not (bar.match(l) and names and bar.match(l).group(1) == names[-1]):
            fail('not a status line in the block, or a bar not under its stage: %r' % l, path, lines)
    if len(names) != len(set(names)):
        fail('a stage has two lines in the block', path, lines)
    at = {l.split(':')[0]: i for i, l in enumerate(lines[block[0]:]) if counts.match(l)}
    rest = lines[block[0]:]
    if 'train' in at and 'frames2json' in at and at['train'] + 1 < len(rest) and train_bar.match(rest[at['train'] + 1]):
        full += 1
if full == 0:
    sys.exit('no screen showed train and frames2json with their frame counts and train\'s line under train\'s:\n'
             + '\n'.join(lines_of(snaps[len(snaps) // 2])))
print('screens %d, with the whole train block %d, stages seen %s' % (len(snaps), full, sorted(seen)), file=sys.stderr)
PY
  # the final metrics, and the block taken back: the last line of the run is the pipeline's own
  grep -qE '^accuracy +[01]\.[0-9]+$' "$TMP/history"
  grep -qE '^macro avg ' "$TMP/history"
  grep -B1 '^EXIT=0$' "$TMP/history" | head -1 | grep -qE '^sst: done in [0-9]+ s: accuracy [0-9.]+ on validation'
  grep -q '"accuracy": ' "$TMP/o/metrics.json"
  [ -z "$(ls -A "$TMP/scratch")" ]   # no status files or pipes left behind
}
