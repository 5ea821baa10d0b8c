#!/usr/bin/env bats
# kill -9 of each stage of both pipelines (pipelines/sst and pipelines/squad on the embedded
# default, small samples), at two points: as soon as the stage runs, and in the middle of its
# stream. The run must end non-zero within its bound, name the killed stage, show a consumer
# reporting the missing eos (mid-stream, where the stage has one), and leave no process of the
# run behind: every pid that was the run's descendant at the kill is checked, never a name.
# A tap slowed down (BERTPIPE_TAP_AFTER, small queues) after the stage, or after the producer of
# a last stage, keeps it running long enough to be killed where the test says.
load test_helper

# The descendants of the given pids, "PID ARGV0" a line, from one snapshot of the process
# table: one ps, where walking /proc with a process per entry is too slow to catch a short stage.
descendants_argv0() {
  ps -e -o pid=,ppid=,args= | awk -v roots="$*" '
    { parent[$1] = $2; argv0[$1] = $3; pid[NR] = $1 }
    END {
      n = split(roots, r, " ")
      for (i = 1; i <= n; i++) mine[r[i]] = 0
      do {
        grown = 0
        for (i = 1; i <= NR; i++)
          if (!(pid[i] in mine) && (parent[pid[i]] in mine)) { mine[pid[i]] = 1; grown = 1 }
      } while (grown)
      for (p in mine) if (mine[p]) print p, argv0[p]
    }'
}

descendants() { descendants_argv0 "$@" | cut -d' ' -f1; }

# The pid of a descendant of $1 that runs stage $2 (argv[0] is BIN/STAGE), or nothing.
stage_pid() { # run-pid stage
  descendants_argv0 "$1" | awk -v want="$BERTPIPE_BIN/$2" '$2 == want { print $1; exit }'
}

# Whether pid $1 is still a live process. A zombie is not: it has ended, and only its parent
# has not collected it yet; one whose parent was killed belongs to init (kill -9 of a stage at
# its exit can orphan the tracer LeakSanitizer forks to check for leaks).
running() {
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# Lines of a file, 0 when it is not there yet.
lines() { { wc -l <"$1"; } 2>/dev/null || echo 0; }

# Kill STAGE of PIPELINE with SIGKILL at POINT: "start" (as soon as it runs) or "mid": once the
# tap after TAPPED has logged a hello and 2 data frames of this phase but no eos, so the stream
# through the tap is unfinished when the stage dies. TAPPED is the stage's producer (the stage
# is still reading), the stage itself (extract and eval, which read files: they are still
# sending) or the stage's consumer's producer. EOS says what the survivors must report:
# "yes", a consumer names the missing eos (its producer went away, or it was stopped while it
# still drained what the stage sent); "up", the producer names its consumer's disconnect (the
# stage sends nothing before its input ends, as batch does, or is a last stage); "no", nothing.
# PHASE "train": the instance of the training phase (after OUT/validation.batches is made).
# Arguments after PHASE are the pipeline's, appended to the small defaults.
kill_stage() { # pipeline stage point tapped eos phase [pipeline-args...]
  local pipeline=$1 stage=$2 point=$3 tapped=$4 eos=$5 phase=$6 args
  shift 6
  case $pipeline in
    sst) args=(--eval-sample 24 --epochs 1 --batch-size 8) ;;
    squad) args=(--eval-sample 6 --epochs 1 --batch-size 4) ;;
  esac
  if [ "$stage" != extract ] || [ "$point" = start ]; then
    case $pipeline in sst) args+=(--sample 48) ;; squad) args+=(--sample 12) ;; esac
  fi
  args+=("$@")
  # A stage that must be seen sending (a consumer is to report its missing eos) is tapped too:
  # its own tap's log shows its hello went out.
  local own=""
  [ "$eos" = yes ] && [ "$tapped" != "$stage" ] && own=$TMP/o/tap-$stage.jsonl
  rm -rf "$TMP/o" "$TMP/err"
  BERTPIPE_HWM=2 BERTPIPE_TAP_AFTER=$tapped${own:+,$stage} BERTPIPE_TAP="$BERTPIPE_BIN/tap --delay-ms 40" \
    "$BERTPIPE_TOP/pipelines/$pipeline" "${args[@]}" --out "$TMP/o" --no-plot 2>"$TMP/err" & local run=$!
  local victim="" base=0 own_base=0 _ log="$TMP/o/tap-$tapped.jsonl" seen=0
  [ "$phase" = train ] && base=-1
  for _ in $(seq 1200); do
    kill -0 $run 2>/dev/null || break   # the run ended first: reported below
    if [ "$point" = mid ] && [ "$base" -lt 0 ]; then
      [ -f "$TMP/o/validation.batches" ] || { sleep 0.05; continue; }
      base=$(lines "$log")
      [ -z "$own" ] || own_base=$(lines "$own")
    fi
    victim=$(stage_pid $run "$stage")
    if [ -n "$victim" ]; then
      [ "$point" = start ] && break
      seen=$(( $(lines "$log") - base ))
      if [ "$seen" -gt 0 ] && tail -n "$seen" "$log" | grep -q '"k":"eos"'; then
        echo "the stream through tap($tapped) ended before $stage could be killed in its middle"
        kill -9 $run $(descendants $run) 2>/dev/null; false
      fi
      [ "$seen" -ge 3 ] && { [ -z "$own" ] || [ $(( $(lines "$own") - own_base )) -ge 1 ]; } && break
    fi
    sleep 0.05
  done
  [ -n "$victim" ] || { echo "$stage never ran"; cat "$TMP/err"; kill -9 $run; false; }
  local pids
  pids=$(descendants $run)
  local snap; snap=$(ps -o pid,ppid,stat,args -p "$(echo $pids | tr ' ' ,)")
  kill -9 "$victim"
  local status=0
  timeout 120 tail --pid=$run -f /dev/null || status=124
  [ "$status" -eq 0 ] || { echo "the run did not end"; kill -9 $run $pids 2>/dev/null; false; }
  wait $run || status=$?
  echo "$pipeline, $stage killed at its $point: status $status"
  grep -E "error|stage" "$TMP/err" | head -20
  [ "$status" -ne 0 ]
  grep -q "^$pipeline: error: stage $stage failed (killed by signal 9)" "$TMP/err"
  if [ "$point" = mid ]; then
    case $eos in
      yes) grep -q "eos missing" "$TMP/err" ;;
      up) grep -q "disconnected before the end of the stream" "$TMP/err" ;;
    esac
  fi
  for q in $pids; do
    ! running "$q" || { echo "left behind (victim $victim, run $run):"; ps -o pid,ppid,stat,args -p "$q"; echo "at the kill:"; echo "$snap"; false; }
  done
  refute_sanitizer "$TMP/err"
}

# Both points for STAGE of PIPELINE (see kill_stage); the extra pipeline arguments, which
# make the stage's stream longer, only matter in its middle.
both_points() { # pipeline stage tapped eos phase [pipeline-args...]
  local pipeline=$1 stage=$2
  shift 2
  kill_stage "$pipeline" "$stage" start "${@:1:3}"
  kill_stage "$pipeline" "$stage" mid "$@"
}

# eval streams from a file as fast as it computes: a long evaluation split in batches of one
# keeps it sending well after its first frames; batches of one keep train's input going while
# it starts. batch sends its hello only once it has read every feature, so its consumer never
# knew it as a producer: its producer reports instead. A last stage's producer may have handed
# its eos to the socket before the kill: nothing is asserted of it beyond the run's line.
@test "sst: extract killed at its start and mid-stream" { both_points sst extract extract yes train; }
@test "sst: tokenize killed at its start and mid-stream" { both_points sst tokenize extract yes train; }
@test "sst: batch killed at its start and mid-stream" { both_points sst batch tokenize up train; }
@test "sst: train killed at its start and mid-stream" { both_points sst train batch yes train --batch-size 1 --epochs 2; }
@test "sst: frames2json killed at its start and mid-stream" { both_points sst frames2json train no train; }
@test "sst: eval killed at its start and mid-stream" { both_points sst eval eval yes val --eval-sample 400 --eval-batch-size 1; }
@test "sst: postprocess killed at its start and mid-stream" { both_points sst postprocess eval yes val --eval-sample 100 --eval-batch-size 4; }
@test "sst: score killed at its start and mid-stream" { both_points sst score postprocess no val --eval-sample 100 --eval-batch-size 4; }

@test "squad: extract killed at its start and mid-stream" { both_points squad extract extract yes train; }
# (40 examples, not 12: at 12 a quiet machine tokenized the whole stream between two looks)
@test "squad: tokenize killed at its start and mid-stream" { both_points squad tokenize extract yes train --sample 40; }
@test "squad: batch killed at its start and mid-stream" { both_points squad batch tokenize up train; }
@test "squad: train killed at its start and mid-stream" { both_points squad train batch yes train --batch-size 1 --epochs 2; }
@test "squad: frames2json killed at its start and mid-stream" { both_points squad frames2json train no train; }
@test "squad: eval killed at its start and mid-stream" { both_points squad eval eval yes val --eval-sample 40 --eval-batch-size 1; }
@test "squad: postprocess killed at its start and mid-stream" { both_points squad postprocess eval yes val --eval-sample 24 --eval-batch-size 2; }
@test "squad: score killed at its start and mid-stream" { both_points squad score postprocess no val --eval-sample 24 --eval-batch-size 2; }
