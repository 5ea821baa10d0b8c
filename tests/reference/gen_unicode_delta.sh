#!/bin/bash
# gen_unicode_delta.sh — regenerate common/text/unicode_delta.c: the code points where Hugging Face
# tokenizers' BERT normalizer/pre-tokenizer disagree with the utf8proc-based rules of
# common/text/unicode.c. Needs `npm install` in tests/reference and a C compiler.
# Run from the repository root:  tests/reference/gen_unicode_delta.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$root/tests/reference" && node gen_unicode_delta.js) > "$tmp/hf.tsv"
cc -std=c11 -D_GNU_SOURCE -O2 -I"$root/common" "$root/tests/tools/tok_unicode_delta.c" \
   "$root/common/text/unicode.c" $(pkg-config --cflags --libs libutf8proc) -lpthread -o "$tmp/delta"
"$tmp/delta" < "$tmp/hf.tsv" > "$root/common/text/unicode_delta.c"
echo "wrote common/text/unicode_delta.c ($(grep -c '^    {' "$root/common/text/unicode_delta.c") code points)"
