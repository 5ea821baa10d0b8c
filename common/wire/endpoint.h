/* wire/endpoint.h — the one endpoint layer: where frames come from and go to.
 *
 * Endpoint specs (docs/protocol.md has the long form):
 *   "-"               stdio: frames are back-to-back MessagePack maps on stdin/stdout
 *   "file:PATH"       the same bytes in a file: a recorded stream to replay, or one to
 *                     record (written to PATH.tmp-PID and renamed when complete)
 *   "ipc://PATH"      ZeroMQ PULL (input) / PUSH (output)
 *   "tcp://HOST:PORT" the same over TCP (CURVE-encrypted once wire/curve.h's settings are made:
 *                     a bind is the CURVE server, a connect the client)
 *   "@ENDPOINT"       bind;  ">ENDPOINT" connect.  Without a prefix an input binds and an
 *                     output connects (CZMQ's PULL/PUSH defaults), so any start order works
 *                     and N producers can fan in to one consumer.
 *   "A,B,C"           input: one PULL socket on every endpoint listed;
 *                     output: fan-out — one PUSH socket per endpoint, frames go to whichever
 *                     consumer is ready, and each gets its own hello and eos with its count.
 *
 * Stream rules enforced here, so no stage re-implements them: the first frame is a hello;
 * every producer ends with an eos carrying the number of data frames it sent; the input
 * returns "end" only after `producers` eos and only when the counts add up. A stream that
 * ends without its eos (EOF, or a ZeroMQ peer that disconnects first) is an error.
 * Output blocks at the high-water mark (never drops) and lingers so the eos is delivered.
 * Must never: read a data frame's fields: only hello, eos and error frames mean anything here.
 *
 * Threads: endpoints are for one thread. The ZeroMQ context they share is reference-counted
 * without a lock, so a program that opens or closes endpoints from several threads must
 * serialise those calls itself (stages are single-threaded; workers are processes).
 *
 * Peers: a ZeroMQ input knows each connection by its file descriptor, so a producer is a peer
 * that sent a hello: one that goes away before its eos fails the stream (after a 500 ms grace
 * for frames still in flight), whatever the others did; a connection that sends nothing (a
 * port scan, a health check) is no producer and changes nothing. An output whose consumer
 * leaves before the eos fails ("downstream went away") instead of queueing for ever, and one
 * whose consumer refuses every handshake (CURVE on one side only, a wrong server key: see
 * wire/curve.h) fails naming that, at once on a protocol error, after 5 s of hang-ups.
 *
 * Waits: every wait here (a read, a send blocked at the high-water mark, a close waiting for
 * its consumers) looks at the stop flag (bp_endpoint_interrupt) and BERTPIPE_TIMEOUT at least
 * every 100 ms, so none outlasts a stop signal, the timeout or its peer.
 *
 * Environment: BERTPIPE_HWM (messages queued per socket, default 256),
 * BERTPIPE_LINGER_MS (default -1: wait until delivered), BERTPIPE_TIMEOUT (seconds any wait for
 * a peer may last — an input without a frame, an output whose consumer takes none or does not
 * hang up — default 0: wait for ever).
 */
#ifndef BP_ENDPOINT_H
#define BP_ENDPOINT_H
#include "wire/frame.h"

typedef struct bp_in bp_in;
typedef struct bp_out bp_out;

/* ---- stopping, and why a stream failed ------------------------------------------------- */

/* For a stage's SIGINT/SIGTERM handler (async-signal-safe: it only sets a flag; the first
 * signal is kept). Every wait and every call of this layer then fails with
 * "interrupted by SIGTERM (SPEC)". */
void bp_endpoint_interrupt(int sig);
/* The signal given to bp_endpoint_interrupt, 0 when none. */
int bp_endpoint_interrupted(void);

/* What ended the first stream of this process that failed for a reason outside it: how a
 * stage picks its exit status (proto/frames.md, section 4: 3 upstream, 4 downstream). */
typedef enum bp_stream_failure {
    BP_FAIL_NONE = 0,
    BP_FAIL_UPSTREAM,     /* an input received an error frame */
    BP_FAIL_DOWNSTREAM,   /* an output's consumer went away (a closed pipe, a disconnect) */
} bp_stream_failure;
bp_stream_failure bp_endpoint_failure(void);

/* ---- input ------------------------------------------------------------------------ */

/* Open an input; producers = how many eos end the stream (>= 1). NULL on error (err set). */
bp_in *bp_in_open(const char *spec, int producers, bp_err *err);

/* Raw mode: hello, eos and error frames are returned to the caller too (still validated and
 * counted). Used by tap and frames2json, which pass streams on unchanged. */
void bp_in_set_raw(bp_in *in, int raw);

/* Next frame. Returns 1 with *f filled (release it with bp_frame_release), 0 at the regular
 * end of every stream (all eos in, counts verified), -1 on error: bp_in_error() says what,
 * with the endpoint as WHERE. */
int bp_in_next(bp_in *in, bp_frame *f);

const char *bp_in_error(const bp_in *in);
const bp_err *bp_in_err(const bp_in *in);

/* The first hello received (NULL before any). Valid until bp_in_close. */
const bp_frame *bp_in_hello(const bp_in *in);
/* Wait for the first hello and return it (NULL on error or end: see bp_in_error). A frame
 * that arrives first (with N producers) is kept and returned by the next bp_in_next. */
const bp_frame *bp_in_wait_hello(bp_in *in);

/* Data frames received so far, in total and of one kind. */
int64_t bp_in_count(const bp_in *in);
int64_t bp_in_count_kind(const bp_in *in, bp_kind kind);

/* Log "in: N frames (…) from SPEC" (unless quiet) and free everything. NULL is fine. */
void bp_in_close(bp_in *in);

/* ---- output ----------------------------------------------------------------------- */

bp_out *bp_out_open(const char *spec, bp_err *err);

/* Raw mode: the caller sends hello and eos itself (tap, json2frames); close adds nothing. */
void bp_out_set_raw(bp_out *out, int raw);
/* Raw mode, merging: eos frames passed in are held back and close sends one eos per output
 * with the data frames it actually carried. For a raw stage reading N producers (a tap on a
 * fan-in), so its consumer sees one stream and cannot stop after the first producer's eos. */
void bp_out_merge_eos(bp_out *out);

/* Start a hello frame in w with the standard fields ("from": this stage, "pid"); the caller
 * adds schema fields, then calls bp_out_hello. */
void bp_hello_begin(bp_writer *w);
/* bp_hello_begin, then copy each of the NULL-terminated `keys` that the upstream hello has,
 * unchanged: how a stage passes the stream's schema on before adding its own fields. */
void bp_hello_begin_from(bp_writer *w, const bp_frame *upstream, const char *const *keys);
/* Send the hello (to every fan-out endpoint). Must be the first frame. */
int bp_out_hello(bp_out *out, bp_writer *w);
/* Finish w's frame and send it as a data frame. -1 on error (bp_out_error). */
int bp_out_send(bp_out *out, bp_writer *w);
/* Send exact bytes of one frame (already valid); counted as data unless hello/eos/error. */
int bp_out_send_frame(bp_out *out, const bp_frame *f);

const char *bp_out_error(const bp_out *out);
const bp_err *bp_out_err(const bp_out *out);
int64_t bp_out_count(const bp_out *out);

/* Send the eos (unless raw), deliver everything, log "out: N frames (…) to SPEC", free.
 * Returns 0, or -1 when the eos could not be delivered (err set). */
int bp_out_close(bp_out *out, bp_err *err);

/* Best effort on a failure path: send an error frame with `message`, drop the rest, free.
 * Downstream then fails naming this stage instead of waiting for ever. NULL is fine. */
void bp_out_abort(bp_out *out, const char *message);

#endif
