#!/usr/bin/python3
"""compare_jsonl.py — count the lines where two tokenizer outputs differ (parity check).

  compare_jsonl.py LABEL REFERENCE.jsonl CANDIDATE.jsonl
Prints the first few differences (which field, which window, which token) and a final line
"LABEL: differing N of M". Exit status 0 either way; the caller sums the counts.
"""
import json
import sys


def first_difference(ref, got):
    if ref.get("error") != got.get("error"):
        return f"error {ref.get('error')!r} vs {got.get('error')!r}"
    rw, gw = ref.get("windows", []), got.get("windows", [])
    if len(rw) != len(gw):
        return f"{len(rw)} windows vs {len(gw)}"
    for w, (a, b) in enumerate(zip(rw, gw)):
        for key in ("ids", "type_ids", "mask", "seq", "offsets"):
            if a[key] != b[key]:
                n = min(len(a[key]), len(b[key]))
                i = next((i for i in range(n) if a[key][i] != b[key][i]), n)
                return (f"window {w} {key}[{i}]: {a[key][i] if i < len(a[key]) else 'END'} vs "
                        f"{b[key][i] if i < len(b[key]) else 'END'}")
    if ref.get("labels") != got.get("labels"):
        return f"labels {ref.get('labels')} vs {got.get('labels')}"
    return "ids/field order"


def main():
    label, ref_path, got_path = sys.argv[1:4]
    with open(ref_path, encoding="utf-8") as f:
        ref_lines = f.read().splitlines()
    with open(got_path, encoding="utf-8") as f:
        got_lines = f.read().splitlines()
    differing = abs(len(ref_lines) - len(got_lines))
    shown = 0
    for number, (r, g) in enumerate(zip(ref_lines, got_lines), start=1):
        if r == g:
            continue
        differing += 1
        if shown < 5:
            ref, got = json.loads(r), json.loads(g)
            print(f"{label}: line {number} id {ref.get('id')}: {first_difference(ref, got)}")
            shown += 1
    print(f"{label}: differing {differing} of {max(len(ref_lines), len(got_lines))}")


if __name__ == "__main__":
    main()
