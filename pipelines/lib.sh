# pipelines/lib.sh — what the pipeline manifests share: finding the stages, wiring edges as
# ipc sockets or pipes, swapping or tapping a stage by environment variable, and
# supervising the processes so that one failing stage fails the run, named.
#
#   BERTPIPE_BIN=DIR           where the stages are (default: the repo's bin/, else PATH)
#   BERTPIPE_<STAGE>="CMD"     run CMD instead of the stage (e.g. BERTPIPE_TRAIN="valgrind bin/train")
#   BERTPIPE_TAP_AFTER="a,b"         splice a tap after stages a and b (log: OUT/tap-a.jsonl)
#   --stdio (BP_MODE=stdio)    connect stages with pipes (named FIFOs) instead of ipc sockets
# Sourced by bash scripts only; it never runs anything at load time.

bp_lib_init() { # manifest-name
  BP_NAME=$1
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  BP_TOP=$(cd "$here/.." && pwd)
  if [ -z "${BERTPIPE_BIN:-}" ]; then
    if [ -x "$BP_TOP/bin/train" ]; then BERTPIPE_BIN=$BP_TOP/bin
    else BERTPIPE_BIN=$(dirname "$(command -v train 2>/dev/null || echo /usr/local/bin/train)")
    fi
  fi
  BP_MODE=${BP_MODE:-ipc}
  BP_PIDS=()
  BP_NAMES=()
  BP_RUN=$(mktemp -d "${TMPDIR:-/tmp}/bertpipe-$BP_NAME.XXXXXX")
  trap 'bp_cleanup' EXIT
  trap 'bp_cleanup; exit 130' INT
  trap 'bp_cleanup; exit 143' TERM
}

bp_cleanup() {
  local pid
  for pid in "${BP_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  [ -n "${BP_RUN:-}" ] && rm -rf "$BP_RUN"
}

bp_say() { echo "$BP_NAME: $*" >&2; }
bp_fail() { echo "$BP_NAME: error: $*" >&2; exit 1; }

# The command for a stage: BERTPIPE_<STAGE> when set, else BIN/stage.
bp_cmd() {
  local var="BERTPIPE_$(echo "$1" | tr 'a-z-' 'A-Z_')"
  if [ -n "${!var:-}" ]; then echo "${!var}"; else echo "$BERTPIPE_BIN/$1"; fi
}

# An edge between two stages: prints the endpoint the producer writes and the consumer reads.
# ipc mode: a socket in the run dir; stdio mode: a FIFO (given to the stages as stdin/stdout).
bp_edge() {
  if [ "$BP_MODE" = stdio ]; then
    mkfifo "$BP_RUN/$1.fifo" && echo "fifo:$BP_RUN/$1.fifo"
  else
    echo "ipc://$BP_RUN/$1.sock"
  fi
}

# bp_stage NAME IN OUT [ARGS...] — start stage NAME in the background reading IN and writing
# OUT (each an edge from bp_edge, a file:PATH, "-" or "" for none), with a tap spliced
# after it when BERTPIPE_TAP_AFTER names it.
bp_stage() {
  local name=$1 in=$2 out=$3; shift 3
  local -a cmd
  read -r -a cmd <<<"$(bp_cmd "$name")"
  if [[ ",${BERTPIPE_TAP_AFTER:-}," == *",$name,"* && -n "$out" ]]; then
    local mid
    mid=$(bp_edge "$name-tap")
    bp_spawn "$name" "$in" "$mid" "${cmd[@]}" "$@"
    local -a tap
    read -r -a tap <<<"$(bp_cmd tap)"
    bp_spawn "tap($name)" "$mid" "$out" "${tap[@]}" --brief --log "$BP_OUT/tap-$name.jsonl"
  else
    bp_spawn "$name" "$in" "$out" "${cmd[@]}" "$@"
  fi
}

bp_spawn() {
  local label=$1 in=$2 out=$3; shift 3
  local -a io=()
  local redir_in=/dev/null redir_out=/dev/null
  case "$in" in
    fifo:*) redir_in=${in#fifo:} ;;
    "") ;;
    -) redir_in=/dev/stdin ;;
    *) io+=(--in "$in") ;;
  esac
  case "$out" in
    fifo:*) redir_out=${out#fifo:} ;;
    "") ;;
    -) redir_out=/dev/stdout ;;
    *) io+=(--out "$out") ;;
  esac
  "$@" "${io[@]}" <"$redir_in" >"$redir_out" &
  BP_PIDS+=($!)
  BP_NAMES+=("$label")
}

# Wait for every stage; the first that fails is named, the rest are stopped.
bp_supervise() {
  local pid status i why
  local -a live=("${BP_PIDS[@]}")
  while [ ${#live[@]} -gt 0 ]; do
    status=0
    pid=""
    wait -n -p pid "${live[@]}" || status=$?
    [ -n "$pid" ] || break
    local -a rest=()
    for i in "${live[@]}"; do [ "$i" = "$pid" ] || rest+=("$i"); done
    live=("${rest[@]}")
    if [ "$status" -ne 0 ]; then
      for i in "${!BP_PIDS[@]}"; do
        if [ "${BP_PIDS[$i]}" = "$pid" ]; then
          why="exit status $status"
          [ "$status" -gt 128 ] && why="killed by signal $((status - 128))"
          bp_say "error: stage ${BP_NAMES[$i]} failed ($why); stopping the pipeline"
        fi
      done
      for i in "${live[@]}"; do kill "$i" 2>/dev/null; done
      for i in "${live[@]}"; do wait "$i" 2>/dev/null; done
      BP_PIDS=()
      BP_NAMES=()
      return 1
    fi
  done
  BP_PIDS=()
  BP_NAMES=()
  return 0
}
