/* test_endpoint.c — the stream rules of common/wire/endpoint.c over stdio and ipc.
 *
 * Producers and consumers run in forked processes (each with its own endpoint and its own
 * ZeroMQ context, as real stages do); the parent is one side and checks what bp_in_next
 * and the children report. Covers: a stdio stream through a pipe, fan-out to 2 consumers
 * (each its own hello and eos, totals add up), fan-in of 2 producers, eos-count mismatch,
 * data before hello, and a producer killed before its eos (stdio and ipc).
 * Never writes outside its own temporary directory; alarm() bounds every case.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "wire/endpoint.h"
#include "tap.h"

static char tmpdir[256];

typedef enum produce_mode {
    PRODUCE_NORMAL,      /* hello, frames, eos */
    PRODUCE_KILLED,      /* hello, frames, then _exit(9) with no eos */
    PRODUCE_BAD_COUNT,   /* raw: hello, frames, eos claiming one frame more */
    PRODUCE_NO_HELLO,    /* raw: a data frame first */
} produce_mode;

static void put_feature(bp_writer *w, const char *prefix, long i) {
    char id[64];
    bp_begin(w, BP_FEATURE);
    bp_put_int(w, "seq", i);
    snprintf(id, sizeof id, "%s-%ld", prefix, i);
    bp_put_str(w, "example_id", id);
}

/* Runs in a child: write one stream to `spec`; the exit status says whether it worked. */
static int produce(const char *spec, const char *prefix, long count, produce_mode mode) {
    bp_err err;
    bp_out *out = bp_out_open(spec, &err);
    if (!out) return 2;
    bp_writer w;
    bp_writer_init(&w);
    int raw = mode == PRODUCE_BAD_COUNT || mode == PRODUCE_NO_HELLO;
    bp_out_set_raw(out, raw);
    bp_frame f;
    if (mode == PRODUCE_NO_HELLO) {
        put_feature(&w, prefix, 0);
        size_t len;
        const char *p = bp_finish(&w, &len);
        if (bp_frame_decode(&f, p, len, NULL, NULL, &err) || bp_out_send_frame(out, &f)) return 3;
        bp_frame_release(&f);
    }
    bp_hello_begin(&w);
    if (bp_out_hello(out, &w)) return 3;
    for (long i = 0; i < count; i++) {
        put_feature(&w, prefix, i);
        if (bp_out_send(out, &w)) return 4;
    }
    if (mode == PRODUCE_KILLED) {
        /* A pipe write has arrived when it returns; ZeroMQ sends from its own thread, so give
         * the frames time to reach the consumer: only the eos may be missing. */
        if (strcmp(spec, "-") != 0) usleep(1000 * 1000);
        _exit(9);
    }
    if (mode == PRODUCE_BAD_COUNT) {
        bp_begin(&w, BP_EOS);
        bp_put_str(&w, "from", "test");
        bp_put_int(&w, "count", count + 1);
        size_t len;
        const char *p = bp_finish(&w, &len);
        if (bp_frame_decode(&f, p, len, NULL, NULL, &err) || bp_out_send_frame(out, &f)) return 5;
        bp_frame_release(&f);
    }
    bp_writer_free(&w);
    return bp_out_close(out, &err) ? 6 : 0;
}

static pid_t spawn_producer(const char *spec, const char *prefix, long count, produce_mode mode, int stdout_fd) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (stdout_fd >= 0) {
            if (dup2(stdout_fd, 1) < 0) _exit(7);
            close(stdout_fd);
        }
        _exit(produce(spec, prefix, count, mode));
    }
    return pid;
}

static int exit_status(pid_t pid) {
    int st;
    if (pid <= 0 || waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

typedef struct consumed {
    int rc;                 /* last bp_in_next result */
    int64_t data;
    int distinct_ok;        /* every example_id seen once */
    char error[512];
} consumed;

/* Read a whole stream in this process. */
static consumed consume(const char *spec, int producers, int64_t max_frames) {
    consumed c = {0};
    c.distinct_ok = 1;
    bp_err err;
    bp_in *in = bp_in_open(spec, producers, &err);
    if (!in) {
        c.rc = -1;
        snprintf(c.error, sizeof c.error, "%s", err.msg);
        return c;
    }
    char **ids = calloc((size_t)max_frames + 1, sizeof *ids);
    bp_frame f;
    while ((c.rc = bp_in_next(in, &f)) == 1) {
        char *id = bp_get_strdup(&f, "example_id", &err);
        for (int64_t i = 0; id && ids && i < c.data && i < max_frames; i++)
            if (strcmp(ids[i], id) == 0) c.distinct_ok = 0;
        if (ids && c.data < max_frames) ids[c.data] = id;
        else free(id);
        c.data++;
        bp_frame_release(&f);
    }
    if (c.rc < 0) snprintf(c.error, sizeof c.error, "%s", bp_in_error(in));
    for (int64_t i = 0; ids && i < c.data && i < max_frames; i++) free(ids[i]);
    free(ids);
    bp_in_close(in);
    return c;
}

/* Run consume() with stdin replaced by a pipe from a forked producer on "-". */
static consumed stdio_case(long count, produce_mode mode, int *producer_status) {
    int p[2];
    consumed c = {0};
    if (pipe(p)) { c.rc = -2; return c; }
    pid_t pid = spawn_producer("-", "s", count, mode, p[1]);
    close(p[1]);
    int saved = dup(0);
    dup2(p[0], 0);
    close(p[0]);
    c = consume("-", 1, count + 1);
    dup2(saved, 0);
    close(saved);
    *producer_status = exit_status(pid);
    return c;
}

static void test_stdio(void) {
    int st;
    consumed c = stdio_case(50, PRODUCE_NORMAL, &st);
    tap_ok(c.rc == 0, "stdio: stream ends cleanly");
    TAP_EQ_INT(c.data, 50, "stdio: 50 data frames arrive");
    tap_ok(c.distinct_ok, "stdio: each exactly once");
    TAP_EQ_INT(st, 0, "stdio: producer exits 0");

    c = stdio_case(4, PRODUCE_BAD_COUNT, &st);
    tap_ok(c.rc == -1, "stdio: wrong eos count is an error");
    if (!tap_ok(strstr(c.error, "eos count mismatch: eos says 5 data frames, 4 arrived (-)") != NULL,
                "stdio: mismatch error names both counts and the endpoint"))
        tap_diag("  got \"%s\"", c.error);

    c = stdio_case(2, PRODUCE_NO_HELLO, &st);
    tap_ok(c.rc == -1, "stdio: data before hello is an error");
    if (!tap_ok(strstr(c.error, "feature frame before any hello") != NULL, "stdio: data-before-hello text"))
        tap_diag("  got \"%s\"", c.error);
    TAP_EQ_INT(c.data, 0, "stdio: nothing handed out before the hello");

    c = stdio_case(3, PRODUCE_KILLED, &st);
    TAP_EQ_INT(st, 9, "stdio: killed producer exited 9");
    tap_ok(c.rc == -1 && c.data == 3, "stdio: the 3 frames arrive, then an error");
    if (!tap_ok(strstr(c.error, "stream ended without eos: 0 of 1 eos received after 3 frames") != NULL,
                "stdio: missing eos named"))
        tap_diag("  got \"%s\"", c.error);
}

/* Runs in a child: read one stream in raw mode and report what came through a pipe. */
static void fanout_consumer(const char *spec, int report_fd) {
    bp_err err;
    bp_in *in = bp_in_open(spec, 1, &err);
    if (!in) _exit(2);
    bp_in_set_raw(in, 1);
    int hellos = 0, eos = 0;
    int64_t data = 0, eos_count = -1;
    bp_frame f;
    int r;
    while ((r = bp_in_next(in, &f)) == 1) {
        if (f.kind == BP_HELLO) hellos++;
        else if (f.kind == BP_EOS) { eos++; bp_get_int(&f, "count", 0, INT64_MAX, &eos_count, &err); }
        else data++;
        bp_frame_release(&f);
    }
    char line[160];
    int n = snprintf(line, sizeof line, "%d %d %lld %lld %d\n", hellos, eos, (long long)data, (long long)eos_count, r);
    if (write(report_fd, line, (size_t)n) != n) _exit(3);
    bp_in_close(in);
    _exit(r == 0 ? 0 : 1);
}

static void test_fan_out(void) {
    char a[300], b[300], both[620];
    snprintf(a, sizeof a, "ipc://%s/fo-a", tmpdir);
    snprintf(b, sizeof b, "ipc://%s/fo-b", tmpdir);
    snprintf(both, sizeof both, "%s,%s", a, b);
    int reports[2][2];
    pid_t consumers[2];
    for (int i = 0; i < 2; i++) {
        if (pipe(reports[i])) { tap_ok(0, "fan-out: pipe"); return; }
        fflush(stdout);
        if ((consumers[i] = fork()) == 0) {
            close(reports[i][0]);
            fanout_consumer(i == 0 ? a : b, reports[i][1]);
        }
        close(reports[i][1]);
    }
    int pst = exit_status(spawn_producer(both, "o", 300, PRODUCE_NORMAL, -1));
    TAP_EQ_INT(pst, 0, "fan-out: producer exits 0 after both consumers hang up");
    int64_t total = 0;
    for (int i = 0; i < 2; i++) {
        char line[160] = "";
        ssize_t n = read(reports[i][0], line, sizeof line - 1);
        close(reports[i][0]);
        line[n > 0 ? n : 0] = 0;
        int hellos = -1, eos = -1, r = -9;
        long long data = -1, eos_count = -2;
        sscanf(line, "%d %d %lld %lld %d", &hellos, &eos, &data, &eos_count, &r);
        TAP_EQ_INT(exit_status(consumers[i]), 0, "fan-out: consumer %d ends cleanly", i);
        tap_ok(hellos == 1 && eos == 1, "fan-out: consumer %d got one hello and one eos (%d, %d)", i, hellos, eos);
        tap_ok(eos_count == data, "fan-out: consumer %d's eos counts its own %lld frames", i, data);
        total += data;
    }
    TAP_EQ_INT(total, 300, "fan-out: the two shares add up to 300");
}

static void test_fan_in(void) {
    char spec[300];
    snprintf(spec, sizeof spec, "ipc://%s/fi", tmpdir);
    pid_t p1 = spawn_producer(spec, "a", 200, PRODUCE_NORMAL, -1);
    pid_t p2 = spawn_producer(spec, "b", 150, PRODUCE_NORMAL, -1);
    consumed c = consume(spec, 2, 400);
    tap_ok(c.rc == 0, "fan-in: ends after 2 eos with matching counts");
    if (c.rc) tap_diag("  %s", c.error);
    TAP_EQ_INT(c.data, 350, "fan-in: 200 + 150 frames");
    tap_ok(c.distinct_ok, "fan-in: each exactly once");
    TAP_EQ_INT(exit_status(p1), 0, "fan-in: producer a exits 0");
    TAP_EQ_INT(exit_status(p2), 0, "fan-in: producer b exits 0");
}

static void test_ipc_errors(void) {
    char spec[300];
    snprintf(spec, sizeof spec, "ipc://%s/killed", tmpdir);
    pid_t pid = spawn_producer(spec, "k", 3, PRODUCE_KILLED, -1);
    consumed c = consume(spec, 1, 10);
    TAP_EQ_INT(exit_status(pid), 9, "ipc: killed producer exited 9");
    tap_ok(c.rc == -1, "ipc: consumer of a killed producer fails");
    TAP_EQ_INT(c.data, 3, "ipc: the 3 frames sent before the kill arrived");
    if (!tap_ok(strstr(c.error, "disconnected before its eos") && strstr(c.error, "0 of 1 eos received after 3 frames"),
                "ipc: error names the missing eos"))
        tap_diag("  got \"%s\"", c.error);

    snprintf(spec, sizeof spec, "ipc://%s/badcount", tmpdir);
    pid = spawn_producer(spec, "m", 7, PRODUCE_BAD_COUNT, -1);
    c = consume(spec, 1, 10);
    tap_ok(c.rc == -1 && strstr(c.error, "eos count mismatch: eos says 8 data frames, 7 arrived"),
           "ipc: eos count mismatch refused");
    exit_status(pid);

    /* fan-in counts are checked as a sum: 2 producers, one overclaims */
    snprintf(spec, sizeof spec, "ipc://%s/badsum", tmpdir);
    pid_t ok = spawn_producer(spec, "g", 5, PRODUCE_NORMAL, -1);
    pid = spawn_producer(spec, "h", 5, PRODUCE_BAD_COUNT, -1);
    c = consume(spec, 2, 20);
    /* the overclaim is caught when its eos comes: at the end (11 of 10), or earlier, when the
     * counts so far already add up to one frame more than has arrived */
    long long claimed = -1, arrived = -2;
    const char *mismatch = strstr(c.error, "eos count mismatch: eos says ");
    if (mismatch) sscanf(mismatch, "eos count mismatch: eos says %lld data frames, %lld arrived", &claimed, &arrived);
    if (!tap_ok(c.rc == -1 && claimed == arrived + 1 && claimed >= 6 && claimed <= 11, "fan-in: the sum of eos counts is checked"))
        tap_diag("  got \"%s\"", c.error);
    exit_status(ok);
    exit_status(pid);

    bp_err err;
    tap_ok(bp_in_open("udp://x", 1, &err) == NULL && strstr(err.msg, "unknown endpoint 'udp://x'"), "unknown transport refused");
    tap_ok(bp_in_open("-", 0, &err) == NULL && strstr(err.msg, "producers must be at least 1"), "0 producers refused");
}

int main(void) {
    setenv("BERTPIPE_QUIET", "1", 1);
    setenv("BERTPIPE_TIMEOUT", "30", 1);   /* a broken case fails instead of hanging */
    alarm(120);
    snprintf(tmpdir, sizeof tmpdir, "%s/bp-endpoint-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        tap_ok(0, "temporary directory");
        return tap_done();
    }
    test_stdio();
    test_fan_out();
    test_fan_in();
    test_ipc_errors();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) tap_diag("could not remove %s", tmpdir);
    return tap_done();
}
