#!/usr/bin/env bats
# CURVE on tcp endpoints (docs/protocol.md, "Security: CURVE on tcp"): keygen's files, a
# stream that arrives whole with CURVE and is ciphertext on the wire, clients without the
# server's key refused before any frame, bad key files, and the plain-tcp warning. Every wait
# is bounded (timeout, BERTPIPE_TIMEOUT), so a hang fails a test instead of stalling it.
load test_helper

# The output of `run` is exactly one error line of STAGE.
output_is_one_error_line() { # stage
  printf '%s\n' "$output" >"$TMP/run.out"
  assert_one_error_line "$TMP/run.out" "$1"
}

keys() { # NAME... -> $TMP/NAME.key, $TMP/NAME.pub
  for n in "$@"; do keygen --out "$TMP/$n" 2>/dev/null; done
}

# A small example stream whose text holds a token to look for on the wire.
canary_stream() {
  {
    echo '{"v":1,"k":"hello","from":"test","task":"classification"}'
    for i in 0 1 2 3 4; do
      printf '{"v":1,"k":"example","seq":%d,"example_id":"c-%d","text":"canary-plaintext-%d","label":0}\n' "$i" "$i" "$i"
    done
    echo '{"v":1,"k":"eos","from":"test","count":5}'
  } >"$TMP/x.jsonl"
}

@test "keygen writes NAME.key (mode 0600, both keys) and NAME.pub (mode 0644, the public key), z85" {
  run keygen --out "$TMP/node"
  [ "$status" -eq 0 ]
  [ "$(stat -c %a "$TMP/node.key")" = 600 ]
  [ "$(stat -c %a "$TMP/node.pub")" = 644 ]
  z85='[][0-9a-zA-Z.:+=^!/*?&<>(){}@%$#-]{40}'   # ']' first in a bracket is a literal
  pub=$(LC_ALL=C grep -E "^public-key = $z85\$" "$TMP/node.pub" | cut -c14-)
  [ ${#pub} -eq 40 ]
  grep -qxF "public-key = $pub" "$TMP/node.key"
  LC_ALL=C grep -qE "^secret-key = $z85\$" "$TMP/node.key"
  run grep -c secret-key "$TMP/node.pub"
  [ "$output" = 0 ]
  ls "$TMP" | { ! grep -q tmp; }   # written under temporary names, renamed: none left over
}

@test "keygen refuses to overwrite a key without --force, and --force makes a new pair" {
  keys node
  before=$(cat "$TMP/node.key")
  run keygen --out "$TMP/node"
  [ "$status" -eq 1 ]
  output_is_one_error_line keygen
  [[ $output == *"the key file exists (--force replaces it) ($TMP/node.key)"* ]]
  [ "$(cat "$TMP/node.key")" = "$before" ]
  run keygen --out "$TMP/node" --force
  [ "$status" -eq 0 ]
  [ "$(cat "$TMP/node.key")" != "$before" ]
  [ "$(grep public-key "$TMP/node.key")" = "$(grep public-key "$TMP/node.pub")" ]
}

@test "keygen without --out is a usage error (status 2)" {
  run keygen
  [ "$status" -eq 2 ]
  [[ $output == *"keygen: error: --out DIR/NAME is required (see keygen --help)"* ]]
}

@test "extract | tokenize over tcp with CURVE gives the frames of the pipe run" {
  keys tok
  printf 'A fine little film.\nNot good at all.\nA café, naïve and 日本語.\n' >"$TMP/s.txt"
  extract --format lines "$TMP/s.txt" | tokenize --vocab "$VOCAB" --max-length 40 | frames2json >"$TMP/pipe.jsonl"
  port=$(free_port)
  # the server's key pair by option; the client's server key from the environment
  BERTPIPE_TIMEOUT=20 tokenize --vocab "$VOCAB" --max-length 40 --curve-key "$TMP/tok.key" --in "tcp://127.0.0.1:$port" \
    2>"$TMP/t.err" | frames2json >"$TMP/tcp.jsonl" & t=$!
  BERTPIPE_CURVE_SERVER=$TMP/tok.pub timeout 30 extract --format lines "$TMP/s.txt" --out "tcp://127.0.0.1:$port" 2>"$TMP/e.err"
  wait $t
  [ "$(grep -c '"k":"feature"' "$TMP/tcp.jsonl")" -eq 3 ]
  cmp <(sed -E 's/"pid":[0-9]+/"pid":0/' "$TMP/pipe.jsonl") <(sed -E 's/"pid":[0-9]+/"pid":0/' "$TMP/tcp.jsonl")
  refute_sanitizer "$TMP"/*.err
}

@test "a plain tcp client's forged stream never reaches a CURVE consumer, which then takes the real one" {
  keys sink
  canary_stream
  printf '{"v":1,"k":"hello","from":"forger"}\n{"v":1,"k":"example","seq":0,"example_id":"forged","text":"x","label":1}\n{"v":1,"k":"eos","from":"forger","count":1}\n' |
    json2frames --out "file:$TMP/forged.bin"
  port=$(free_port)
  BERTPIPE_TIMEOUT=20 frames2json --curve-key "$TMP/sink.key" --in "tcp://127.0.0.1:$port" >"$TMP/y.jsonl" 2>"$TMP/c.err" & c=$!
  timeout 20 zmqraw --out "tcp://127.0.0.1:$port" --hold-ms 1000 --linger-ms 0 "$TMP/forged.bin"
  kill -0 $c   # still waiting for a producer: the forger was none
  timeout 20 json2frames --curve-server "$TMP/sink.pub" --out "tcp://127.0.0.1:$port" <"$TMP/x.jsonl"
  wait $c
  cmp "$TMP/x.jsonl" "$TMP/y.jsonl"
  ! grep -q forged "$TMP/y.jsonl"
  refute_sanitizer "$TMP/c.err"
}

@test "a CURVE client with the wrong server key is refused: no frame arrives and the wait ends at BERTPIPE_TIMEOUT" {
  keys sink other
  canary_stream
  json2frames --out "file:$TMP/x.bin" <"$TMP/x.jsonl"
  port=$(free_port)
  BERTPIPE_TIMEOUT=2 frames2json --curve-key "$TMP/sink.key" --in "tcp://127.0.0.1:$port" >"$TMP/y.jsonl" 2>"$TMP/c.err" & c=$!
  timeout 20 zmqraw --out "tcp://127.0.0.1:$port" --curve-server "$TMP/other.pub" --hold-ms 1000 --linger-ms 0 "$TMP/x.bin"
  status=0
  wait $c || status=$?
  [ "$status" -eq 1 ]
  [ ! -s "$TMP/y.jsonl" ]
  assert_one_error_line "$TMP/c.err" frames2json
  grep -qF "no frame for 2 s (BERTPIPE_TIMEOUT): 0 of 1 eos received after 0 frames (tcp://127.0.0.1:$port)" "$TMP/c.err"
}

# The consumer ends on its own (BERTPIPE_TIMEOUT): never signalled, so a sanitizer's exit is
# never cut short (timeout signals its whole process group, LeakSanitizer's tracer included).
mismatch() { # consumer-curve-options producer-curve-options expected-text
  canary_stream
  port=$(free_port)
  # shellcheck disable=SC2086
  BERTPIPE_TIMEOUT=8 frames2json $1 --in "tcp://127.0.0.1:$port" >"$TMP/y.jsonl" 2>"$TMP/c.err" & c=$!
  sleep 0.3
  # shellcheck disable=SC2086
  run env BERTPIPE_TIMEOUT=15 timeout 20 json2frames $2 --out "tcp://127.0.0.1:$port" <"$TMP/x.jsonl"
  wait $c || true
  [ ! -s "$TMP/y.jsonl" ]   # not one frame got through
  grep -q "no frame for 8 s" "$TMP/c.err"
  [ "$status" -eq 1 ]
  output_is_one_error_line json2frames
  [[ $output == *"$3"* ]] || { echo "$output" >&2; false; }
}

@test "a plain producer to a CURVE consumer fails: the consumer refused the handshake" {
  keys sink
  mismatch "--curve-key $TMP/sink.key" "" "the consumer refused the ZeroMQ handshake"
}

@test "a CURVE producer with the wrong server key fails within 5 s, asking for the consumer's public key" {
  keys sink other
  mismatch "--curve-key $TMP/sink.key" "--curve-server $TMP/other.pub" \
    "the consumer refused the ZeroMQ handshake (it hung up: Broken pipe, for 5 s): is --curve-server the public key"
}

@test "a CURVE producer to a plain consumer fails too" {
  keys sink
  mismatch "" "--curve-server $TMP/sink.pub" "the consumer refused the ZeroMQ handshake"
}

# Relay the stream through tcprelay, which keeps every byte that passed: $TMP/wire.bin.
through_relay() { # consumer-curve-options producer-curve-options
  canary_stream
  inner=$(free_port) outer=$(free_port)
  # shellcheck disable=SC2086
  BERTPIPE_TIMEOUT=20 frames2json $1 --in "tcp://127.0.0.1:$inner" >"$TMP/y.jsonl" 2>"$TMP/c.err" & c=$!
  timeout 30 tcprelay --listen "$outer" --to "$inner" --dump "$TMP/wire.bin" & r=$!
  sleep 0.3
  # shellcheck disable=SC2086
  timeout 30 json2frames $2 --out "tcp://127.0.0.1:$outer" <"$TMP/x.jsonl" 2>"$TMP/p.err"
  wait $c
  wait $r
  cmp "$TMP/x.jsonl" "$TMP/y.jsonl"     # the stream arrived whole through the relay
  [ "$(stat -c %s "$TMP/wire.bin")" -ge "$(json2frames <"$TMP/x.jsonl" | wc -c)" ]
  refute_sanitizer "$TMP"/*.err
}

@test "on the wire, plain tcp carries the text as it is (the check can see it)" {
  through_relay "" ""
  [ "$(grep -ac canary-plaintext "$TMP/wire.bin")" -ge 1 ]
  grep -aq NULL "$TMP/wire.bin"      # the ZMTP greeting names the mechanism
}

@test "on the wire, a CURVE stream is ciphertext: no frame text, no field name" {
  keys sink
  through_relay "--curve-key $TMP/sink.key" "--curve-server $TMP/sink.pub"
  grep -aq CURVE "$TMP/wire.bin"
  for text in canary-plaintext example_id hello eos; do
    ! grep -aq "$text" "$TMP/wire.bin" || { echo "'$text' in the clear" >&2; false; }
  done
}

bad_key() { # option file expected-text
  run timeout 20 frames2json "$1" "$2" --in "tcp://127.0.0.1:$(free_port)"
  [ "$status" -eq 2 ]
  output_is_one_error_line frames2json
  [[ $output == *"$3"*"($2)" ]] || { echo "$output" >&2; false; }
}

@test "a missing key file is a usage error naming the file" {
  bad_key --curve-key "$TMP/none.key" "--curve-key: cannot read the key file: No such file or directory"
}

@test "a key of the wrong length is refused, naming the field" {
  keys node
  sed -i 's/^\(secret-key = .*\).$/\1/' "$TMP/node.key"
  bad_key --curve-key "$TMP/node.key" "secret-key is 39 characters, want 40 (a 32-byte key in z85)"
}

@test "a key with a character outside z85 is refused, naming the column" {
  keys node
  sed -i 's/^\(public-key = \)./\1"/' "$TMP/node.pub"
  bad_key --curve-server "$TMP/node.pub" "public-key has a character that is not z85 at column 1"
}

@test "a public key file given as this side's key pair is refused" {
  keys node
  bad_key --curve-key "$TMP/node.pub" "no secret-key: a public key file where this process's own key pair is wanted"
}

@test "a key pair whose public key is not its secret key's is refused" {
  keys node other
  sed -i "s/^public-key = .*/$(grep public-key "$TMP/other.pub" | sed 's/[&/\]/\\&/g')/" "$TMP/node.key"
  bad_key --curve-key "$TMP/node.key" "public-key is not the public key of secret-key"
}

@test "a file that is no key file is refused" {
  printf 'hello world\n' >"$TMP/junk"
  bad_key --curve-server "$TMP/junk" "neither public-key = Z85 nor secret-key = Z85"
  : >"$TMP/empty"
  bad_key --curve-server "$TMP/empty" "no public-key line"
}

@test "a bad BERTPIPE_CURVE_KEY is the same usage error, naming the setting and the file" {
  run env BERTPIPE_CURVE_KEY="$TMP/none.key" timeout 20 tap --in "tcp://127.0.0.1:$(free_port)"
  [ "$status" -eq 2 ]
  output_is_one_error_line tap
  [[ $output == *"BERTPIPE_CURVE_KEY: cannot read the key file"*"($TMP/none.key)" ]]
}

@test "with CURVE on, a tcp bind without a key pair and a tcp connect without the server key are refused" {
  keys node
  run timeout 20 frames2json --curve-server "$TMP/node.pub" --in "tcp://127.0.0.1:$(free_port)"
  [ "$status" -eq 1 ]
  [[ $output == *"a CURVE server needs its own key pair to bind: give --curve-key FILE"* ]]
  run bash -c "echo x | timeout 20 extract --format lines - --curve-key '$TMP/node.key' --out tcp://127.0.0.1:$(free_port)"
  [ "$status" -eq 1 ]
  [[ $output == *"a CURVE client needs the server's public key to connect: give --curve-server FILE"* ]]
}

@test "CURVE options leave ipc endpoints as they are" {
  keys node
  canary_stream
  frames2json --curve-key "$TMP/node.key" --in "ipc://$TMP/s" >"$TMP/y.jsonl" & c=$!
  timeout 20 json2frames --out "ipc://$TMP/s" <"$TMP/x.jsonl"
  wait $c
  cmp "$TMP/x.jsonl" "$TMP/y.jsonl"
}

warn_line='warning: plain tcp on tcp://0.0.0.0:[0-9]+ is unauthenticated and unencrypted; use --curve-key FILE'

bind_and_feed() { # bind-address [consumer options...]
  local addr=$1; shift
  canary_stream
  port=$(free_port)
  BERTPIPE_TIMEOUT=20 frames2json "$@" --in "tcp://$addr:$port" >/dev/null 2>"$TMP/c.err" & c=$!
  timeout 20 json2frames ${CLIENT_OPTS:-} --out "tcp://127.0.0.1:$port" <"$TMP/x.jsonl"
  wait $c
}

@test "binding plain tcp on a non-loopback address prints one warning line" {
  bind_and_feed 0.0.0.0
  [ "$(wc -l <"$TMP/c.err")" -eq 1 ]
  grep -qE "^frames2json: $warn_line" "$TMP/c.err"
}

@test "binding plain tcp on 127.0.0.1, or with CURVE anywhere, prints no warning" {
  bind_and_feed 127.0.0.1
  [ ! -s "$TMP/c.err" ]
  keys node
  CLIENT_OPTS="--curve-server $TMP/node.pub" bind_and_feed 0.0.0.0 --curve-key "$TMP/node.key"
  [ ! -s "$TMP/c.err" ]
}

@test "a libzmq without CURVE makes the options one clear error line (the test build acts as one)" {
  keys node
  run env BERTPIPE_FAULT=curve:absent timeout 20 frames2json --curve-key "$TMP/node.key" --in "tcp://127.0.0.1:$(free_port)"
  [ "$status" -eq 2 ]
  output_is_one_error_line frames2json
  [[ $output == *"--curve-key: this libzmq has no CURVE security (it was built without libsodium)"* ]]
  run env BERTPIPE_FAULT=curve:absent keygen --out "$TMP/more"
  [ "$status" -eq 1 ]
  output_is_one_error_line keygen
  [ ! -e "$TMP/more.key" ] && [ ! -e "$TMP/more.pub" ]
}
