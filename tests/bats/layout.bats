#!/usr/bin/env bats
# The source tree's own rules (docs/architecture.md): every include keeps the layer order
# (scripts/check-layers), the check catches each kind of breach in a scratch copy of the tree,
# stage mains stay short, only wire/ knows MessagePack, and every file's header comment names
# the file and says what it must never do.
load test_helper

# A scratch copy of what check-layers reads, so a test can break it without touching the tree.
scratch_tree() {
  mkdir -p "$TMP/tree/scripts"
  cp -r "$BERTPIPE_TOP/common" "$BERTPIPE_TOP/stages" "$TMP/tree/"
  cp "$BERTPIPE_TOP/scripts/check-layers" "$TMP/tree/scripts/"
}

# Put TEXT on its own line just before FILE's first #include; print that line's number.
insert_before_first_include() { # file text
  local n
  n=$(grep -n -m1 '^#include' "$1" | cut -d: -f1)
  [ -n "$n" ] || { echo "no #include in $1" >&2; return 1; }
  awk -v n="$n" -v text="$2" 'FNR == n { print text } { print }' "$1" >"$1.new" && mv "$1.new" "$1"
  echo "$n"
}

@test "the tree keeps the layer rules: check-layers prints nothing and exits 0" {
  run "$BERTPIPE_TOP/scripts/check-layers"
  [ "$status" -eq 0 ]
  [ -z "$output" ]
}

# Break FILE of a scratch tree by putting INCLUDE before its first #include: check-layers
# must exit 1 printing exactly one line, naming FILE, that line, the include and WHY.
assert_check_refuses() { # file include why
  scratch_tree
  local n
  n=$(insert_before_first_include "$TMP/tree/$1" "$2")
  run "$TMP/tree/scripts/check-layers" "$TMP/tree"
  [ "$status" -eq 1 ]
  [ "$output" = "check-layers: error: $1:$n includes ${2#\#include }: $3" ]
}

@test "check-layers names the file, line, include and rule when a model file includes wire/frame.h" {
  assert_check_refuses common/model/bert.c '#include "wire/frame.h"' 'model may include only base, backend, model'
}

@test "check-layers refuses msgpack.h in a stage: only wire knows MessagePack" {
  assert_check_refuses stages/batch.c '#include <msgpack.h>' 'only wire may include MessagePack or ZeroMQ headers'
}

@test "check-layers refuses zmq.h in a layer other than wire" {
  assert_check_refuses common/stage/stage.c '#include <zmq.h>' 'only wire may include MessagePack or ZeroMQ headers'
}

@test "check-layers refuses a stage that includes another stage's file" {
  assert_check_refuses stages/eval.c '#include "train.c"' \
    "a stage never includes another stage's file or anything under stages/"
}

@test "check-layers refuses an included .c file" {
  assert_check_refuses common/text/tokenizer.c '#include "text/unicode_delta.c"' 'no file includes a .c file (link it instead)'
}

@test "check-layers refuses an include that does not spell its folder" {
  assert_check_refuses common/ckpt/bert_io.c '#include "bert.h"' 'includes spell the folder ("LAYER/NAME.h")'
}

@test "check-layers refuses a folder of common/ that the rules do not place" {
  scratch_tree
  mkdir "$TMP/tree/common/util"
  printf '/* util/strings.h — x. */\n#include "base/log.h"\n' >"$TMP/tree/common/util/strings.h"
  run "$TMP/tree/scripts/check-layers" "$TMP/tree"
  [ "$status" -eq 1 ]
  [ "$output" = "check-layers: error: common/util/: a folder the layer rules do not know (place it in scripts/check-layers and docs/architecture.md)" ]
}

@test "check-layers does not read an include quoted in a comment" {
  scratch_tree
  printf '/* like this:\n#include "wire/frame.h"\n */\n// #include <msgpack.h>\n' >>"$TMP/tree/common/model/optim.h"
  run "$TMP/tree/scripts/check-layers" "$TMP/tree"
  [ "$status" -eq 0 ]
  [ -z "$output" ]
}

@test "check-layers --graph prints the edges the includes use, not the ones the rules allow" {
  # stage may include text; until one of its files does, its graph line does not list text.
  scratch_tree
  run "$TMP/tree/scripts/check-layers" --graph "$TMP/tree"
  [ "$status" -eq 0 ]
  before=$(grep '^stage ' <<<"$output")
  [[ "$before" != *text* ]]
  insert_before_first_include "$TMP/tree/common/stage/stage.c" '#include "text/tokenizer.h"' >/dev/null
  run "$TMP/tree/scripts/check-layers" --graph "$TMP/tree"
  [ "$status" -eq 0 ]
  words() { tr ' ' '\n' | grep -v '^$' | sort; }
  [ "$(grep '^stage ' <<<"$output" | words)" = "$(printf '%s text' "$before" | words)" ]
}

@test "docs/architecture.md shows the include graph the tree has (scripts/check-layers --graph)" {
  # The doc's block between the two marker lines is the script's output, verbatim.
  sed -n '/^<!-- check-layers --graph -->$/,/^<!-- end -->$/p' "$BERTPIPE_TOP/docs/architecture.md" |
    sed '1,2d;$d' | sed '$d' >"$TMP/doc.graph"
  "$BERTPIPE_TOP/scripts/check-layers" --graph >"$TMP/tree.graph"
  [ -s "$TMP/doc.graph" ]
  diff -u "$TMP/doc.graph" "$TMP/tree.graph"
}

# Guards the house rule that a stage main reads like its man page (no function in stages/
# over 100 lines). Fails until branch `wire`, which shortens the stage mains, is merged.
@test "no function in stages/ is over 100 lines (scripts/function-lengths --max 100 stages)" {
  run "$BERTPIPE_TOP/scripts/function-lengths" --max 100 "$BERTPIPE_TOP/stages"
  echo "$output"
  [ "$status" -eq 0 ]
  [ -z "$output" ]
}

@test "function-lengths --max 100 names a 101-line function and passes a 100-line one" {
  {
    printf 'static int short_enough(void) {\n'
    for i in $(seq 97); do printf '    (void)%d;\n' "$i"; done
    printf '    return 0;\n}\n\n'
    printf 'int too_long(int a,\n             int b) {\n'
    for i in $(seq 97); do printf '    a += %d;\n' "$i"; done
    printf '    return a + b;\n}\n'
  } >"$TMP/long.c"
  run "$BERTPIPE_TOP/scripts/function-lengths" --max 100 "$TMP/long.c"
  [ "$status" -eq 1 ]
  [ "$output" = "101 $TMP/long.c:102 too_long" ]
}

# Guards "wire/ is the only code that knows MessagePack": a stage reaches frames through
# wire/frame.h's accessors, never msgpack_object. Fails until branch `wire` is merged.
@test "no stage mentions msgpack (grep -rl msgpack stages/ prints nothing)" {
  run grep -rl msgpack "$BERTPIPE_TOP/stages"
  echo "$output"
  [ -z "$output" ]
}

# Print a complaint, and fail, when FILE's first line does not start "/* NAME — ".
header_names() { # file name
  local first
  first=$(head -1 "$1")
  [[ "$first" == "/* $2 — "* ]] && return 0
  echo "${1#"$BERTPIPE_TOP"/}: first line is not '/* $2 — ...': $first"
  return 1
}

@test "every file in common/ opens with a header comment whose first line names the file" {
  local bad=0 f
  for f in "$BERTPIPE_TOP"/common/*/*.[ch] "$BERTPIPE_TOP"/common/*/*.cu; do
    [ -e "$f" ] || continue
    header_names "$f" "${f#"$BERTPIPE_TOP"/common/}" || bad=1
  done
  [ "$bad" -eq 0 ]
}

@test "every stage opens with a header comment whose first line names the stage" {
  local bad=0 f
  for f in "$BERTPIPE_TOP"/stages/*.c; do header_names "$f" "$(basename "$f" .c)" || bad=1; done
  [ "$bad" -eq 0 ]
}

@test "every header comment in common/ and stages/ says what the file must never do" {
  local bad=0 f
  for f in "$BERTPIPE_TOP"/common/*/*.[ch] "$BERTPIPE_TOP"/common/*/*.cu "$BERTPIPE_TOP"/stages/*.c; do
    [ -e "$f" ] || continue
    # The header comment is everything up to the first "*/".
    if ! awk '{ print } /\*\// { exit }' "$f" | tr '\n' ' ' | grep -q 'Must never: [a-z]'; then
      echo "${f#"$BERTPIPE_TOP"/}: header comment has no 'Must never: ...' sentence"; bad=1
    fi
  done
  [ "$bad" -eq 0 ]
}
