# pipelines/lib.sh — what the pipeline manifests share: finding the stages, wiring edges as
# ipc sockets or pipes, swapping or tapping a stage by environment variable, and
# supervising the processes so that one failing stage fails the run, named.
#
#   BERTPIPE_BIN=DIR           where the stages are (default: the repo's bin/, else PATH)
#   BERTPIPE_<STAGE>="CMD"     run CMD instead of the stage (e.g. BERTPIPE_TRAIN="valgrind bin/train")
#   BERTPIPE_TAP_AFTER="a,b"         splice a tap after stages a and b (log: OUT/tap-a.jsonl)
#   --stdio (BP_MODE=stdio)    connect stages with pipes (named FIFOs) instead of ipc sockets
# Any other BERTPIPE_ name, or a BERTPIPE_TAP_AFTER entry that is no stage, stops the run
# (status 2) before it starts: a typo must not silently run the stage it meant to replace.
#
# On a terminal, the run's stderr goes through one drawer (bp_status_render): the stages
# write their live frame counts and progress bars to files in a status folder
# (BERTPIPE_STATUS_DIR, base/log.h) and every stderr line of the run comes to the drawer, which
# prints the lines and keeps one block below them: a line per running stage (frames in and out
# and their rates), and train's progress line (epoch, step/total, ETA, loss, lr) under its own.
# Nothing else writes to the terminal, so nothing is drawn over anything else. In a log, each stage prints a progress line every
# BERTPIPE_PROGRESS_EVERY seconds (default 10) instead.
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
  bp_check_env
  BP_RUN=$(mktemp -d "${TMPDIR:-/tmp}/bertpipe-$BP_NAME.XXXXXX")
  BP_RENDER_PID=""
  trap 'bp_cleanup' EXIT
  trap 'bp_interrupted INT 130' INT
  trap 'bp_interrupted TERM 143' TERM
}

# A signal to the pipeline: every stage gets SIGTERM (background stages of a script ignore
# SIGINT, and TERM is what train saves a resumable checkpoint on), the run waits for them,
# bounded, then exits 128 + the signal's number.
bp_interrupted() { # signal-name exit-status
  trap '' INT TERM
  bp_say "interrupted by SIG$1: stopping every stage"
  bp_cleanup
  trap - EXIT
  exit "$2"
}

# Stop every stage still running and remove the run directory (its sockets and FIFOs).
# Runs from traps, so it must not stop at the first failing command (set -e) and must not
# wait for ever: stages get BERTPIPE_STOP_TIMEOUT seconds (default 60: train may be saving a
# checkpoint) after SIGTERM, then SIGKILL.
bp_cleanup() {
  set +e
  if [ ${#BP_PIDS[@]} -gt 0 ]; then
    local pid watchdog
    for pid in "${BP_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    ( exec >/dev/null 2>&1; bp_sleep "${BERTPIPE_STOP_TIMEOUT:-60}"; kill -KILL "${BP_PIDS[@]}" ) &
    watchdog=$!
    for pid in "${BP_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    # KILL, not TERM: called from bp_interrupted, which ignores TERM and INT, the watchdog has
    # inherited that, and a TERM would leave the run waiting out its whole timeout.
    kill -KILL "$watchdog" 2>/dev/null
    wait "$watchdog" 2>/dev/null
    BP_PIDS=()
    BP_NAMES=()
  fi
  bp_status_stop
  [ -n "${BP_RUN:-}" ] && rm -rf "$BP_RUN"
  return 0
}

# ---- the environment ------------------------------------------------------------------
# The stages a manifest may start (bp_cmd's BERTPIPE_<STAGE>) and the settings any part of
# bertpipe reads; tests/bats/tool.bats holds both lists to stages/ and to the sources.
BP_STAGE_NAMES="extract tokenize batch train eval postprocess score tap frames2json json2frames keygen"
BP_ENV_SETTINGS="BIN TOP QUIET PROGRESS PROGRESS_EVERY STATUS_DIR TAP_AFTER STOP_TIMEOUT FAIL_GRACE TIMEOUT
  CONNECT_TIMEOUT FAULT DATA PRECISION HWM LINGER_MS GNUPLOT NO_INSTALL FUZZ_SECONDS HIDE_BF16 EMULATE_BF16 BF16_PACK MPI_PLUGIN
  CURVE_KEY CURVE_SERVER"

bp_env_fail() { echo "$BP_NAME: error: $*" >&2; exit 2; }

bp_check_env() {
  local var name stages=" $BP_STAGE_NAMES " settings
  settings=" $(printf '%s' "$BP_ENV_SETTINGS" | tr -s ' \n' '  ') "
  for var in $(compgen -e BERTPIPE_); do
    name=${var#BERTPIPE_}
    [[ $settings == *" $name "* ]] && continue
    name=${name,,}
    [[ $stages == *" ${name//_/-} "* ]] && continue
    bp_env_fail "$var replaces no stage and is no setting (stages: ${BP_STAGE_NAMES// /, })"
  done
  local IFS=,
  for name in ${BERTPIPE_TAP_AFTER:-}; do
    [ -n "$name" ] || continue
    [[ $stages == *" $name "* ]] ||
      bp_env_fail "BERTPIPE_TAP_AFTER names '$name', which is no stage (stages: ${BP_STAGE_NAMES// /, })"
  done
}

# ---- one status block on a terminal (see the top) ---------------------------------------
# Started by the first stage of a run whose stderr is a terminal (not with BERTPIPE_PROGRESS=0).
bp_status_start() {
  [ -t 2 ] && [ "${BERTPIPE_PROGRESS:-}" != 0 ] || return 0
  mkdir "$BP_RUN/status" && mkfifo "$BP_RUN/stderr.fifo" || return 0
  local size cols=80
  exec {BP_TTY_FD}>&2
  size=$(stty size <&"$BP_TTY_FD" 2>/dev/null) && cols=${size#* }
  [[ $cols =~ ^[0-9]+$ ]] && [ "$cols" -ge 20 ] || cols=80
  bp_status_render "$BP_RUN/status" "$cols" <"$BP_RUN/stderr.fifo" >&"$BP_TTY_FD" 2>/dev/null &
  BP_RENDER_PID=$!
  exec 2>"$BP_RUN/stderr.fifo"
  export BERTPIPE_STATUS_DIR=$BP_RUN/status
}

# The manifest's stderr back to the terminal; the drawer ends once every stage is gone too
# (end of file on its pipe), after the last lines, bounded.
bp_status_stop() {
  [ -n "${BP_RENDER_PID:-}" ] || return 0
  exec 2>&"$BP_TTY_FD"
  unset BERTPIPE_STATUS_DIR
  local watchdog
  ( exec >/dev/null 2>&1; bp_sleep 5; kill "$BP_RENDER_PID" ) &
  watchdog=$!
  wait "$BP_RENDER_PID" 2>/dev/null
  kill "$watchdog" 2>/dev/null
  wait "$watchdog" 2>/dev/null
  BP_RENDER_PID=""
}

# bp_status_render DIR COLUMNS — the drawer: stderr lines from stdin, the status block from
# DIR, 4 times a second: one line per running stage, DIR/STAGE.PID (its frame counts, which
# every stage writes), each followed by DIR/STAGE.PID.bar when the stage draws a progress bar
# (train's epoch, step/total, ETA, loss, lr), in the order the stages started (by pid); a file
# whose process is gone (killed before it could remove it) is not drawn. The block is taken
# back (cursor up, clear to the end of the screen) before new lines are printed above it; its
# lines are cut to the width, so the cursor arithmetic holds. Everything is one printf per
# redraw, and no command is forked.
bp_status_render() {
  local dir=$1 width=$(($2 - 1)) part="" pending="" rc eof=0 drawn=0 shown="" block f s out name pid
  local -a logs status by_pid
  while [ $eof = 0 ]; do
    logs=()
    rc=0
    IFS= read -r -t 0.25 part || rc=$?
    if [ $rc -eq 0 ]; then logs+=("$pending$part"); pending=""
    elif [ $rc -gt 128 ]; then pending+=$part   # a timeout keeps a partial line's text
    else eof=1; [ -z "$pending$part" ] || logs+=("$pending$part"); fi
    while [ $eof = 0 ] && read -r -t 0 _; do   # more lines waiting: take them now
      if IFS= read -r part; then logs+=("$pending$part"); pending=""; else eof=1; fi
    done
    status=() by_pid=() block=""
    if [ $eof = 0 ]; then
      for f in "$dir"/*.[0-9]*; do
        [[ -f $f && $f != *.tmp ]] || continue
        name=${f##*/} name=${name#*.} pid=${name%%.*}
        [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || continue
        IFS= read -r s <"$f" || continue
        # a sparse array lists its indices in increasing order: pid order, counts before bar
        by_pid[pid * 2 + (${#name} > ${#pid})]=${s:0:width}
      done
      for s in "${by_pid[@]}"; do status+=("$s"); block+=$s$'\n'; done
    fi
    [ ${#logs[@]} -gt 0 ] || [ "$block" != "$shown" ] || continue
    out=""
    [ $drawn -eq 0 ] || out=$'\r\e['$drawn$'A'
    out+=$'\e[J'
    for s in "${logs[@]}"; do out+=$s$'\n'; done
    for s in "${status[@]}"; do out+=$s$'\n'; done
    printf '%s' "$out"
    drawn=${#status[@]} shown=$block
  done
}

# Sleep without a child process (a watchdog killed early must leave nothing behind): read
# with a timeout on a pipe whose write end this shell holds, so it never sees end of file.
bp_sleep() { read -rt "$1" <> <(:) || true; }

bp_say() { echo "$BP_NAME: $*" >&2; }
bp_fail() { echo "$BP_NAME: error: $*" >&2; exit 1; }
# A usage error: status 2, as every stage gives.
bp_usage_fail() { echo "$BP_NAME: error: $* (see $BP_NAME --help)" >&2; exit 2; }

# ---- options --------------------------------------------------------------------------
# A manifest keeps what the user gave in BP_OPT (option name without "--" -> value; "1" for
# a flag). An explicit flag always wins: defaults — the embedded default's first, then the
# recipe's — only fill names that are not there (bp_opt_default). The effective settings are
# written to OUT/run_config.json (bp_write_config), as the HF Trainer writes training_args.
declare -gA BP_OPT=()

# bp_parse_options "VALUE NAMES" "FLAG NAMES" ARGS... — fills BP_OPT; --stdio and --help are
# handled here (the manifest defines usage()); anything else is a usage error.
bp_parse_options() {
  local values flags name
  values=" $(printf '%s' "$1" | tr -s ' \n' '  ') " flags=" $(printf '%s' "$2" | tr -s ' \n' '  ') "
  shift 2
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --stdio) BP_MODE=stdio; BP_OPT[stdio]=1 ;;
      --*=*)
        name=${1%%=*}; name=${name#--}
        [[ $values == *" $name "* ]] || bp_usage_fail "unknown option '${1%%=*}'"
        BP_OPT[$name]=${1#*=} ;;
      --*)
        name=${1#--}
        if [[ $values == *" $name "* ]]; then
          [ $# -ge 2 ] || bp_usage_fail "$1 needs a value"
          BP_OPT[$name]=$2
          shift
        elif [[ $flags == *" $name "* ]]; then
          BP_OPT[$name]=1
        else
          bp_usage_fail "unknown option '$1'"
        fi ;;
      *) bp_usage_fail "unexpected argument '$1'" ;;
    esac
    shift
  done
}

bp_opt_default() { [ -n "${BP_OPT[$1]+set}" ] || BP_OPT[$1]=$2; }
bp_opt_given() { [ -n "${BP_OPT[$1]+set}" ]; }
bp_opt() { echo "${BP_OPT[$1]:-}"; }

# bp_opt_args ARRAY NAME[=STAGE-OPTION]... — append "--STAGE-OPTION VALUE" to ARRAY for every
# NAME that has a value (the stage option is --NAME unless given).
bp_opt_args() {
  local -n into=$1
  shift
  local spec name flag
  for spec in "$@"; do
    name=${spec%%=*}; flag=${spec#*=}
    [ -n "${BP_OPT[$name]+set}" ] && into+=("--$flag" "${BP_OPT[$name]}")
  done
  return 0
}

# The model-variant options of train (train --help), which the sst and squad manifests pass on:
# the body, head and loss, freezing, the optimizer and its schedule, and the head and body sizes.
BP_VARIANT_VALUES="model head loss freeze optimizer momentum dampening schedule mlp-hidden activation rnn-layers
  rnn-hidden rnn-dropout head-dropout hidden heads intermediate layers"
BP_VARIANT_FLAGS="nesterov unidirectional"

# bp_variant_args ARRAY — append every variant option given (values and flags) to ARRAY.
bp_variant_args() {
  local -n variant_into=$1
  # shellcheck disable=SC2086
  bp_opt_args "$1" $BP_VARIANT_VALUES
  local flag
  for flag in $BP_VARIANT_FLAGS; do bp_opt_given "$flag" && variant_into+=("--$flag"); done
  return 0
}

# ---- several machines (docs/scale.md) ---------------------------------------------------
# A run is one of three roles: the whole pipeline on this machine (neither option), the
# training node (--listen ADDR: the training split's features come from --producers N
# tokenizing nodes, everything else runs here) or a tokenizing node (--connect ADDR: only the
# training split's extract, its --shard K/N, and tokenize, whose features go to ADDR). The
# training node binds ADDR (the consumer owns the address, as on one machine). The network
# stages wait BERTPIPE_CONNECT_TIMEOUT seconds (default 600) for their peers to come up; only
# they get it, so a trainer busy evaluating is never cut off by it.
BP_NODE_VALUES="listen connect producers shard"

bp_node_address_ok() { local re='^[@>]?(tcp://[^/]+:[0-9]+|ipc://.+)$'; [[ $1 =~ $re ]]; }

# bp_node_init — BP_ROLE (single, trainer or tokenizer) from the options, each checked.
bp_node_init() {
  BP_ROLE=single
  BP_NET_TIMEOUT=${BERTPIPE_CONNECT_TIMEOUT:-600}
  [[ $BP_NET_TIMEOUT =~ ^[0-9]+$ ]] || bp_env_fail "BERTPIPE_CONNECT_TIMEOUT wants whole seconds, got '$BP_NET_TIMEOUT'"
  local name
  if bp_opt_given listen && bp_opt_given connect; then
    bp_usage_fail "give --listen (the training node) or --connect (a tokenizing node), not both"
  fi
  for name in listen connect; do
    bp_opt_given "$name" || continue
    bp_node_address_ok "$(bp_opt "$name")" ||
      bp_usage_fail "--$name wants tcp://HOST:PORT (or ipc://PATH), got '$(bp_opt "$name")'"
  done
  # on a node, only the network stages get it (bp_tokenize_node, bp_train_batch)
  bp_opt_given listen || bp_opt_given connect && unset BERTPIPE_CONNECT_TIMEOUT
  if bp_opt_given listen; then
    BP_ROLE=trainer
    bp_opt_given shard && bp_usage_fail "--shard is for a tokenizing node (--connect); the training node takes --producers N"
    bp_opt_default producers 1
    [[ $(bp_opt producers) =~ ^[1-9][0-9]{0,3}$ ]] ||
      bp_usage_fail "--producers wants the number of tokenizing nodes (1 or more), got '$(bp_opt producers)'"
  elif bp_opt_given connect; then
    BP_ROLE=tokenizer
    bp_opt_given producers && bp_usage_fail "--producers is for the training node (--listen)"
    if bp_opt_given shard; then
      local shard k n
      shard=$(bp_opt shard) k=${shard%%/*} n=${shard#*/}
      [[ $shard =~ ^[0-9]+/[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$k" -lt "$n" ] ||
        bp_usage_fail "--shard wants K/N with 0 <= K < N (this node's share of N tokenizing nodes), got '$shard'"
    fi
  else
    for name in producers shard; do
      bp_opt_given "$name" && bp_usage_fail "--$name is for a run on several machines (--listen or --connect)"
    done
  fi
  return 0
}

# bp_tokenize_node EXTRACT-ARGS... -- TOKENIZE-ARGS... — a tokenizing node's whole run: the
# training split's examples (its --shard of them), tokenized, sent to the --connect address.
bp_tokenize_node() {
  local -a ex=() tok=()
  while [ "$1" != -- ]; do ex+=("$1"); shift; done
  shift
  tok=("$@")
  bp_opt_given shard && ex+=(--shard "$(bp_opt shard)")
  local addr e1
  addr=$(bp_opt connect) e1=$(bp_edge node-examples)
  bp_say "tokenizing node: the training split${BP_OPT[shard]:+ (shard ${BP_OPT[shard]})} -> $addr"
  bp_stage extract "" "$e1" "${ex[@]}"
  BERTPIPE_CONNECT_TIMEOUT=$BP_NET_TIMEOUT bp_stage tokenize "$e1" "$addr" "${tok[@]}"
  bp_supervise || exit 1
  bp_say "done: every feature of this node delivered to $addr"
  exit 0
}

bp_net_wait() {
  if [ "$BP_NET_TIMEOUT" -gt 0 ]; then echo "up to $BP_NET_TIMEOUT s to connect, BERTPIPE_CONNECT_TIMEOUT"
  else echo "for ever: BERTPIPE_CONNECT_TIMEOUT=0"; fi
}

# bp_train_features EDGE — where the training node's batch reads the training features: the
# local tokenize's EDGE, or the --listen address (bound here) for a training node.
bp_train_features() { if [ "$BP_ROLE" = trainer ]; then bp_opt listen; else echo "$1"; fi; }

# bp_train_batch IN OUT ARGS... — the training split's batch: on a training node it reads the
# --producers N tokenizing nodes on the --listen address, within BERTPIPE_CONNECT_TIMEOUT.
bp_train_batch() {
  local in=$1 out=$2; shift 2
  if [ "$BP_ROLE" = trainer ]; then
    bp_say "training node: waiting for $(bp_opt producers) tokenizing node(s) on $in ($(bp_net_wait))"
    BERTPIPE_CONNECT_TIMEOUT=$BP_NET_TIMEOUT bp_stage batch "$in" "$out" --producers "$(bp_opt producers)" "$@"
  else
    bp_stage batch "$in" "$out" "$@"
  fi
}

# bp_model_body — the body train will build: bert, or a baseline given with --model.
bp_model_body() { local b; b=$(bp_opt model); echo "${b:-bert}"; }

bp_json_str() {
  local s=$1
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\t'/\\t}; s=${s//$'\n'/\\n}; s=${s//$'\r'/\\r}
  printf '"%s"' "$s"
}

# bp_write_config FILE [KEY=VALUE...] — every BP_OPT setting and the extra keys, as one JSON
# object with sorted keys (numbers stay numbers), written atomically.
bp_write_config() {
  local file=$1 k v first=1
  shift
  local -A all=()
  for k in "${!BP_OPT[@]}"; do all[$k]=${BP_OPT[$k]}; done
  for k in "$@"; do all[${k%%=*}]=${k#*=}; done
  {
    printf '{\n'
    while IFS= read -r k; do
      [ -n "$k" ] || continue
      v=${all[$k]}
      [ $first = 1 ] || printf ',\n'
      first=0
      printf '  %s: ' "$(bp_json_str "$k")"
      if [[ $v =~ ^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then printf '%s' "$v"; else bp_json_str "$v"; fi
    done < <(printf '%s\n' "${!all[@]}" | LC_ALL=C sort)
    printf '\n}\n'
  } >"$file.tmp.$$" && mv "$file.tmp.$$" "$file"
}

# ---- splits: never evaluate on what is trained on ----------------------------------------
# The train, validation and test examples a manifest reads from one source are recorded as
# extract wrote them (file:PATH); each hello says the source and what was read (split_origin,
# split_part: docs/extract.md). Two sources that are different files are not compared.

# bp_same_source A B — 0 when the paths name the same file or folder.
bp_same_source() { [ -e "$1" ] && [ -e "$2" ] && [ "$(readlink -f -- "$1")" = "$(readlink -f -- "$2")" ]; }

# bp_json_str_field LINE KEY — the value of string field KEY in one JSON line, still escaped
# (empty when absent).
bp_json_str_field() {
  sed -n "s/.*\"$2\":\"\(\([^\"\\\\]\|\\\\.\)*\)\".*/\1/p" <<<"$1"
}

# bp_check_overlap TRAIN OTHER WHAT — TRAIN and OTHER are recorded example streams, WHAT names
# OTHER's role ("validation", "test"). The run stops (status 2, one line with the reason) when
# OTHER holds examples TRAIN holds, unless --allow-overlap (then one warning). Distinct parts
# of one source (an archive's train.txt and dev.txt) are disjoint by construction; otherwise,
# for one source, the example ids of both sides decide.
bp_check_overlap() {
  local train=$1 other=$2 what=$3
  local tj=$BP_RUN/overlap-train.jsonl oj=$BP_RUN/overlap-$what.jsonl th oh
  local -a to_json
  read -r -a to_json <<<"$(bp_cmd frames2json)"
  "${to_json[@]}" --in "file:$train" --out "$tj" && "${to_json[@]}" --in "file:$other" --out "$oj" ||
    bp_fail "cannot read the recorded examples ($train, $other)"
  th=$(sed -n 1p "$tj") oh=$(sed -n 1p "$oj")
  local source tpart opart torigin oorigin
  source=$(bp_json_str_field "$th" source)
  tpart=$(bp_json_str_field "$th" split_part) opart=$(bp_json_str_field "$oh" split_part)
  torigin=$(bp_json_str_field "$th" split_origin) oorigin=$(bp_json_str_field "$oh" split_origin)
  if ! bp_same_source "$source" "$(bp_json_str_field "$oh" source)" ||
     { [ -n "$tpart" ] && [ -n "$opart" ] && [ "$tpart" != all ] && [ "$opart" != all ] && [ "$tpart" != "$opart" ]; }; then
    rm -f "$tj" "$oj"
    return 0
  fi
  local ids='s/^{"v":1,"k":"example","seq":[0-9]*,"example_id":"\(\([^"\\]\|\\.\)*\)".*/\1/p'
  local shared n total
  shared=$(LC_ALL=C comm -12 <(sed -n "$ids" "$tj" | LC_ALL=C sort -u) <(sed -n "$ids" "$oj" | LC_ALL=C sort -u))
  total=$(sed -n "$ids" "$oj" | wc -l)
  rm -f "$tj" "$oj"
  if [ -z "$shared" ]; then
    bp_say "$what examples checked: none of the $total is a training example ($source, $oorigin)"
    return 0
  fi
  n=$(wc -l <<<"$shared")
  local why fix=""
  if [ "$torigin" = whole ] && [ "$oorigin" = whole ]; then
    why="$source holds one split, read whole by both" fix="hold a $what side out with --$what-ratio R, or give another file; "
  elif [ "$torigin" = member ] && [ "$oorigin" = member ]; then
    why="both read the $tpart split of $source" fix="pick another split; "
  else
    why="both read the same part of $source"
  fi
  local ids_shown
  ids_shown=$(head -3 <<<"$shared" | paste -sd, | sed 's/,/, /g')
  [ "$n" -le 3 ] || ids_shown+=", ..."
  local reason="$n of the $total $what examples are training examples too (ids $ids_shown): $why"
  if bp_opt_given allow-overlap; then
    bp_say "warning: evaluating on training examples (--allow-overlap): $reason"
    return 0
  fi
  echo "$BP_NAME: error: refusing to evaluate on training examples: $reason (${fix}--allow-overlap to do it anyway)" >&2
  exit 2
}

# The command for a stage: BERTPIPE_<STAGE> when set, else BIN/stage.
bp_cmd() {
  local var="BERTPIPE_$(echo "$1" | tr 'a-z-' 'A-Z_')"
  if [ -n "${!var:-}" ]; then echo "${!var}"; else echo "$BERTPIPE_BIN/$1"; fi
}

# bp_plot — the run's pictures (scripts/plot, i.e. `bertpipe plot OUT`) into OUT/plots, unless
# --no-plot. Drawing is a convenience after a finished run: when it cannot be done (no
# gnuplot, no jq) that is one warning line, never a failed run.
bp_plot() {
  bp_opt_given no-plot && return 0
  local why
  if why=$(BERTPIPE_QUIET=1 "$BP_TOP/scripts/plot" "$BP_OUT" 2>&1 >/dev/null); then
    bp_say "plots in $BP_OUT/plots"
  else
    why=${why%%$'\n'*}
    bp_say "warning: no plots: ${why#plot: error: } (--no-plot skips them)"
  fi
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
  [ -n "$BP_RENDER_PID" ] || [ -n "${BERTPIPE_STATUS_DIR:-}" ] || bp_status_start
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

# Wait for every stage. When one fails, the others get a moment to end on their own, then are
# stopped, and the stage whose failure caused the others is named: the stage contract
# (proto/frames.md) gives status 3 to a stage that stopped because an upstream stage failed
# (it received that stage's error frame) and 4 to one whose downstream went away, so the
# first failure with any other status is the cause; 143 is a stage this function stopped.
bp_supervise() {
  local i
  local -a live=("${BP_PIDS[@]}") failed=() failed_status=()
  while [ ${#live[@]} -gt 0 ]; do
    bp_reap live || break
    [ "$BP_REAPED_STATUS" -eq 0 ] && continue
    failed+=("$BP_REAPED_PID"); failed_status+=("$BP_REAPED_STATUS")
    local watchdog=""
    if [ ${#live[@]} -gt 0 ]; then
      ( exec >/dev/null 2>&1; bp_sleep "${BERTPIPE_FAIL_GRACE:-2}"; kill -TERM "${live[@]}"
        bp_sleep "${BERTPIPE_STOP_TIMEOUT:-60}"; kill -KILL "${live[@]}" ) &
      watchdog=$!
    fi
    while [ ${#live[@]} -gt 0 ] && bp_reap live; do
      [ "$BP_REAPED_STATUS" -ne 0 ] && { failed+=("$BP_REAPED_PID"); failed_status+=("$BP_REAPED_STATUS"); }
    done
    if [ -n "$watchdog" ]; then kill -KILL "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null; fi
    local cause=0
    for i in "${!failed[@]}"; do
      case "${failed_status[$i]}" in 3|4|143) ;; *) cause=$i; break ;; esac
    done
    bp_say "error: stage $(bp_label_of "${failed[$cause]}") failed ($(bp_why "${failed_status[$cause]}")); stopping the pipeline"
    BP_PIDS=()
    BP_NAMES=()
    return 1
  done
  BP_PIDS=()
  BP_NAMES=()
  return 0
}

# Wait for one stage of the pids in array LIVE to end: BP_REAPED_PID and BP_REAPED_STATUS say
# which and how, and it leaves LIVE. Returns 1 when there was none to wait for.
bp_reap() { # array-name
  local -n pids=$1
  local p
  [ ${#pids[@]} -gt 0 ] || return 1
  BP_REAPED_STATUS=0
  BP_REAPED_PID=""
  # A stage whose end bash has reported already ("Killed") is off its job table: wait -n no
  # longer sees it (it would wait for the others instead), but a plain wait for its pid still
  # gives its status. So the ended ones are collected first, by pid.
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null && continue
    BP_REAPED_PID=$p
    wait "$p" 2>/dev/null || BP_REAPED_STATUS=$?
    bp_drop_pid "$1" "$p"
    return 0
  done
  wait -n -p BP_REAPED_PID "${pids[@]}" 2>/dev/null || BP_REAPED_STATUS=$?
  [ -n "${BP_REAPED_PID:-}" ] || return 1
  bp_drop_pid "$1" "$BP_REAPED_PID"
}

bp_drop_pid() { # array-name pid
  local -n arr=$1
  local -a rest=()
  local p
  for p in "${arr[@]}"; do [ "$p" = "$2" ] || rest+=("$p"); done
  arr=("${rest[@]}")
}

bp_label_of() { # pid
  local i
  for i in "${!BP_PIDS[@]}"; do [ "${BP_PIDS[$i]}" = "$1" ] && { echo "${BP_NAMES[$i]}"; return; }; done
  echo "pid $1"
}

bp_why() { # status
  case "$1" in
    3) echo "exit status 3: an upstream stage failed" ;;
    4) echo "exit status 4: its downstream went away" ;;
    *) if [ "$1" -gt 128 ]; then echo "killed by signal $(($1 - 128))"; else echo "exit status $1"; fi ;;
  esac
}
