#!/usr/bin/env bats
# scripts/reliability-counts on one mutated input of each kind per source (the full run, 12 of
# each, makes the count table in docs/reliability.md): every input is refused with one error
# line and its WHERE, or accepted with the output it calls for; none crashes, hangs, passes
# silently or is refused unclearly. Its tally must add up.
load test_helper

@test "reliability-counts: one input of each kind, none crashed, hung, silently wrong or unclear" {
  run nice "$BERTPIPE_TOP/scripts/reliability-counts" --per-kind 1 --seed 5 --timeout 120
  echo "$output"
  [ "$status" -eq 0 ]
  local all
  all=$(grep '^| \*\*all\*\*' <<<"$output" | tr -d '*' | tr '|' ' ')
  read -r _ inputs refused accepted crashed hung wrong unclear <<<"$all"
  [ "$inputs" -gt 40 ]
  [ $((refused + accepted)) -eq "$inputs" ]
  [ "$crashed" -eq 0 ] && [ "$hung" -eq 0 ] && [ "$wrong" -eq 0 ] && [ "$unclear" -eq 0 ]
}
