#!/usr/bin/env bats
# The one command and its install: bertpipe dispatches to the stages and pipelines (in the
# tree and from `make install PREFIX=`, run with nothing else on PATH), refuses unknown names
# with status 2, installs no generic names and never runs setup/apt, and its man pages and
# bash completion are made from the --help texts and say every option those name.
load test_helper

# One installed prefix for the whole file (the optimized build of make: install copies bin/).
setup_file() {
  PREFIX_DIR=$BATS_FILE_TMPDIR/prefix
  make -s -C "$BERTPIPE_TOP" install PREFIX="$PREFIX_DIR" >"$BATS_FILE_TMPDIR/install.log" 2>&1 ||
    { cat "$BATS_FILE_TMPDIR/install.log" >&2; return 1; }
  export PREFIX_DIR
}

# Run a command with only the installed prefix and the system on PATH, and none of the
# tree's variables: what a user gets after make install.
installed() { env -i HOME="$TMP" LC_ALL=C.UTF-8 PATH="$PREFIX_DIR/bin:/usr/bin:/bin" "$@"; }

@test "bertpipe --version prints the VERSION file's line, in the tree and installed" {
  want="bertpipe $(cat "$BERTPIPE_TOP/VERSION")"
  run "$BERTPIPE_TOP/bin/bertpipe" --version
  [ "$status" -eq 0 ] && [ "$output" = "$want" ]
  run installed bertpipe --version
  [ "$status" -eq 0 ] && [ "$output" = "$want" ]
}

@test "an unknown command or option is one error line and exit status 2" {
  for args in tokenise ../bin/train "" --bogus "help tokenise"; do
    # shellcheck disable=SC2086
    installed bertpipe $args >"$TMP/out" 2>"$TMP/err" && { echo "accepted: '$args'" >&2; false; }
    [ $? -eq 2 ] || { echo "status for '$args' was not 2" >&2; false; }
    [ -n "$args" ] || continue   # no arguments: the usage text, on stderr
    assert_one_error_line "$TMP/err" bertpipe
    [ ! -s "$TMP/out" ]
  done
  grep -q '^usage: bertpipe COMMAND' <("$BERTPIPE_TOP/bin/bertpipe" 2>&1)
}

@test "bertpipe help tokenize prints tokenize's own --help, in the tree and installed" {
  run "$BERTPIPE_TOP/bin/bertpipe" help tokenize
  [ "$status" -eq 0 ]
  [ "$output" = "$("$BERTPIPE_TOP/bin/tokenize" --help)" ]
  run installed bertpipe help tokenize
  [ "$status" -eq 0 ]
  [ "$output" = "$("$BERTPIPE_TOP/bin/tokenize" --help)" ]
  [ "${lines[0]}" = "usage: tokenize (--vocab FILE | --checkpoint DIR) [options] [--in SPEC] [--out SPEC]" ]
}

@test "bertpipe --list has every stage, pipeline and plot, and bertpipe --help names each of them" {
  run installed bertpipe --list
  [ "$status" -eq 0 ]
  want=$( (cd "$BERTPIPE_TOP/stages" && ls *.c | sed 's/\.c$//'); printf '%s\n' sst squad predict-sst predict-squad plot)
  [ "$(sort <<<"$output")" = "$(sort <<<"$want")" ]
  help=$(installed bertpipe --help)
  for c in $want; do grep -qE "(^| )$c( |$)" <<<"$help" || { echo "--help lacks $c" >&2; false; }; done
}

@test "make install puts only bertpipe and bertpipe-NAME on PATH, with relative links, and never runs setup" {
  run ls "$PREFIX_DIR/bin"
  [ "$status" -eq 0 ]
  for f in $output; do [[ $f == bertpipe || $f == bertpipe-* ]] || { echo "generic name installed: $f" >&2; false; }; done
  [ -x "$PREFIX_DIR/bin/bertpipe-eval" ] && [ -x "$PREFIX_DIR/bin/bertpipe-batch" ]
  [ -x "$PREFIX_DIR/lib/bertpipe/pipelines/sst" ] && [ -f "$PREFIX_DIR/lib/bertpipe/pipelines/default/vocab.txt" ]
  [ "$(readlink "$PREFIX_DIR/lib/bertpipe/bin/train")" = ../../../bin/bertpipe-train ]
  run make -n -C "$BERTPIPE_TOP" install PREFIX="$TMP/p"
  [ "$status" -eq 0 ]
  if grep -qE 'scripts/setup|apt' <<<"$output"; then echo "$output" >&2; false; fi
}

@test "installed bertpipe sst runs the embedded default with the installed stages and plots it" {
  cd "$TMP"
  run installed bertpipe sst --epochs 1 --out run
  [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
  [ -s run/metrics.json ] && [ -s run/train-metrics.jsonl ] && [ -s run/predictions.tsv ]
  grep -q '"accuracy": ' run/metrics.json
  grep -q "\"vocab\": \"$PREFIX_DIR/lib/bertpipe/pipelines/default/vocab.txt\"" run/run_config.json
  [ -s run/plots/loss.png ] && [ -s run/plots/confusion.svg ]
  # a stage by its installed name composes in a shell pipe
  printf 'a fine film\n' | installed bertpipe-extract --format lines - 2>/dev/null | installed bertpipe-frames2json 2>/dev/null >frames
  grep -q '"text":"a fine film"' frames
}

@test "a DESTDIR tree runs where it lies: the dispatcher finds its home from its own path" {
  make -s -C "$BERTPIPE_TOP" install DESTDIR="$TMP/stage" PREFIX=/opt/bp >/dev/null 2>&1
  [ ! -e /opt/bp/bin/bertpipe ] || skip "/opt/bp exists on this machine"
  run "$TMP/stage/opt/bp/bin/bertpipe" --version
  [ "$status" -eq 0 ] && [ "$output" = "bertpipe $(cat "$BERTPIPE_TOP/VERSION")" ]
  run "$TMP/stage/opt/bp/bin/bertpipe" help batch
  [ "$status" -eq 0 ] && [ "${lines[0]}" = "$("$BERTPIPE_TOP/bin/batch" --help | head -1)" ]
}

@test "every installed man page renders with man -l and groff without a warning" {
  pages=("$PREFIX_DIR"/share/man/man1/*.1)
  [ ${#pages[@]} -eq $(( $(installed bertpipe --list | wc -l) + 1 )) ]
  for p in "${pages[@]}"; do
    MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -l "$p" >"$TMP/page" 2>"$TMP/err"
    [ ! -s "$TMP/err" ] || { echo "man warns on $p:" >&2; cat "$TMP/err" >&2; false; }
    grep -q '^NAME' "$TMP/page" && grep -q '^SYNOPSIS' "$TMP/page"
    groff -ww -z -man "$p" 2>"$TMP/err"
    [ ! -s "$TMP/err" ] || { echo "groff warns on $p:" >&2; cat "$TMP/err" >&2; false; }
  done
}

@test "every man page names every option its command's --help names" {
  installed bertpipe --list >"$TMP/commands"
  echo bertpipe >>"$TMP/commands"
  while read -r c; do
    if [ "$c" = bertpipe ]; then page=$PREFIX_DIR/share/man/man1/bertpipe.1 help=$(installed bertpipe --help)
    else page=$PREFIX_DIR/share/man/man1/bertpipe-$c.1 help=$(installed bertpipe "$c" --help); fi
    text=$(MANWIDTH=80 LC_ALL=C.UTF-8 man -l "$page" 2>/dev/null)
    grep -q "^ *bertpipe" <<<"$text"
    n=0
    for opt in $(grep -oE -- '--[a-z0-9][a-z0-9-]*' <<<"$help" | sort -u); do
      n=$((n + 1))
      grep -qE -- "(^|[^a-z0-9-])$opt([^a-z0-9-]|$)" <<<"$text" || { echo "$page lacks $opt" >&2; false; }
    done
    [ "$c" = predict-sst ] || [ "$n" -gt 0 ] || { echo "no options found in $c --help" >&2; false; }
  done <"$TMP/commands"
}

@test "the man page of a stage carries its --help options and its docs/stages.md note" {
  text=$(MANWIDTH=80 LC_ALL=C.UTF-8 man -l "$PREFIX_DIR/share/man/man1/bertpipe-train.1")
  grep -q '^ *bertpipe-train - fine-tune BERT on batch frames; metric frames out$' <<<"$text"
  grep -qE '^ *bertpipe train \(--checkpoint DIR' <<<"$text"
  grep -qE '^ +--warmup-steps N \| --warmup-ratio R$' <<<"$text"
  grep -q 'train sends one metric frame' <<<"$text"
}

# Completion: what _bertpipe offers for the words typed so far (the last one being completed).
complete_words() {
  bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _bertpipe; printf "%s\n" "${COMPREPLY[@]}"' \
    _ "$PREFIX_DIR/share/bash-completion/completions/bertpipe" "$@"
}

@test "bash completion offers commands, help's commands and each command's options from its --help" {
  [ "$(complete_words bertpipe tok)" = tokenize ]
  [ "$(complete_words bertpipe predict-s | sort | paste -sd' ')" = "predict-squad predict-sst" ]
  [ "$(complete_words bertpipe help tr)" = train ]
  [ "$(complete_words bertpipe sst --no-p)" = --no-plot ]
  [ "$(complete_words bertpipe-tokenize --vo)" = --vocab ]
  [ "$(complete_words bertpipe plot --s | sort | paste -sd' ')" = "--size --smooth" ]
  [ -z "$(complete_words bertpipe train data/)" ]     # not an option: bash completes file names
  for opt in $(bin_help_options train); do
    complete_words bertpipe train -- | grep -qx -- "$opt" || { echo "train completion lacks $opt" >&2; false; }
  done
  [ "$(readlink "$PREFIX_DIR/share/bash-completion/completions/bertpipe-train")" = bertpipe ]
}

bin_help_options() { "$BERTPIPE_TOP/bin/$1" --help | grep -oE -- '--[a-z0-9][a-z0-9-]*' | sort -u; }
