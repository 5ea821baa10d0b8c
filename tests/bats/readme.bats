#!/usr/bin/env bats
# The README's examples are commands a reader pastes: those of its "Composing stages" section
# run as written, from the repository root, on files the repository holds.
load test_helper

# The ```sh blocks of one README section, with bin/ pointing at the stages under test.
readme_section() { # heading
  awk -v h="## $1" '$0 == h { in_section = 1; next } /^## / { in_section = 0 }
                    in_section && /^```sh$/ { code = 1; next } code && /^```$/ { code = 0 } in_section && code' \
    "$BERTPIPE_TOP/README.md" | sed "s#\(^\|[ (|]\)bin/#\1$BERTPIPE_BIN/#g"
}

@test "the README's composing examples run as written and leave nothing behind" {
  readme_section "Composing stages" >"$TMP/composing.sh"
  grep -q -- '--producers 2' "$TMP/composing.sh"
  mkdir "$TMP/scratch"
  cd "$BERTPIPE_TOP"
  run env TMPDIR="$TMP/scratch" bash -euo pipefail "$TMP/composing.sh"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [[ $output == *'"k":"feature","seq":0,"example_id":"0"'* ]]
  [ "${lines[${#lines[@]} - 1]}" = "same batches" ]
  [ -z "$(ls -A "$TMP/scratch")" ]
  [ ! -e my.tsv ] && [ ! -e train.batches ]
}
