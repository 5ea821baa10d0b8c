# tokenize-common.sh — sourced by scripts/parity-tokenize and scripts/bench-tokenize: finds node
# and the reference package, and the C driver. Sets $dump. Never run on its own.
tokenize_prepare() {
  local who=$1
  if ! command -v node >/dev/null 2>&1; then
    echo "$who: skipped: node is not installed (needed for the Hugging Face reference)"; exit 0
  fi
  if [ ! -d "$root/tests/reference/node_modules/@anush008/tokenizers" ]; then
    echo "$who: installing the reference: npm ci in tests/reference" >&2
    (cd "$root/tests/reference" && npm ci --no-audit --no-fund >&2) || {
      echo "$who: skipped: cannot install npm @anush008/tokenizers"; exit 0; }
  fi
  if [ -n "${TOKENIZE_DUMP:-}" ]; then
    dump=$TOKENIZE_DUMP
  else
    make -C "$root" --no-print-directory build/tools/tokenize_dump >&2
    dump=$root/build/tools/tokenize_dump
  fi
}
