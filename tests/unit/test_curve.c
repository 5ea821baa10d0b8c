/* test_curve.c — wire/curve.h without sockets: key files written and read back, every way a
 * key file is refused (with the file and the field in the message), and which tcp addresses
 * count as loopback for the plain-tcp warning. Sockets and handshakes: tests/bats/curve.bats.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "wire/curve.h"

static char dir[] = "/tmp/test_curve.XXXXXX";

/* Write text to DIR/name; returns the path (static buffer per call site is not needed: one at a time). */
static const char *write_file(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f)) {
        tap_diag("cannot write %s", path);
        exit(1);
    }
    return path;
}

/* The file is refused and the message holds `want` and the path. */
static void refused(const char *name, const char *text, int want_secret, const char *want) {
    const char *path = write_file(name, text);
    bp_curve_keypair pair;
    bp_err err = {""};
    int rc = bp_curve_read_file(path, want_secret, &pair, &err);
    tap_ok(rc == -1 && strstr(err.msg, want) && strstr(err.msg, path), "%s is refused: %s", name, err.msg);
}

int main(void) {
    bp_err err;
    if (!mkdtemp(dir)) return 1;
    if (bp_curve_available(&err)) {
        tap_ok(1, "curve # skip %s", err.msg);
        return tap_done();
    }
    bp_curve_keypair pair, back;
    tap_ok(bp_curve_new_keypair(&pair, &err) == 0 && strlen(pair.public_key) == 40 && strlen(pair.secret_key) == 40,
           "a new key pair has two 40-character z85 keys");
    char text[512], pub[512];
    tap_ok(bp_curve_file_text(&pair, 1, text, sizeof text) > 0 && bp_curve_file_text(&pair, 0, pub, sizeof pub) > 0,
           "both file texts fit");
    tap_ok(bp_curve_file_text(&pair, 1, text, 20) == -1, "a buffer too small is an error, not a cut key");
    bp_curve_file_text(&pair, 1, text, sizeof text);
    tap_ok(strstr(pub, pair.secret_key) == NULL && strstr(pub, pair.public_key) != NULL,
           "the .pub text has the public key and not the secret one");

    const char *key_path = write_file("node.key", text);
    tap_ok(bp_curve_read_file(key_path, 1, &back, &err) == 0 && !strcmp(back.public_key, pair.public_key) &&
               !strcmp(back.secret_key, pair.secret_key),
           "NAME.key reads back as the same pair");
    tap_ok(bp_curve_read_file(key_path, 0, &back, &err) == 0 && !strcmp(back.public_key, pair.public_key) &&
               back.secret_key[0] == 0,
           "NAME.key read for its public key only keeps no secret");
    const char *pub_path = write_file("node.pub", pub);
    tap_ok(bp_curve_read_file(pub_path, 0, &back, &err) == 0 && !strcmp(back.public_key, pair.public_key),
           "NAME.pub reads back as the public key");

    char line[256];
    refused("pub-as-secret", pub, 1, "no secret-key: a public key file");
    snprintf(line, sizeof line, "public-key = %.39s\n", pair.public_key);
    refused("short", line, 0, "public-key is 39 characters, want 40");
    snprintf(line, sizeof line, "public-key = %s0\n", pair.public_key);
    refused("long", line, 0, "public-key is 41 characters, want 40");
    snprintf(line, sizeof line, "public-key = %.20s~%.19s\n", pair.public_key, pair.public_key);
    refused("not-z85", line, 0, "not z85 at column 21");
    snprintf(line, sizeof line, "public-key = %s\nsecret-key = %.39s\"\n", pair.public_key, pair.secret_key);
    refused("bad-secret", line, 1, "secret-key has a character that is not z85 at column 40");
    bp_curve_keypair other;
    bp_curve_new_keypair(&other, &err);
    snprintf(line, sizeof line, "public-key = %s\nsecret-key = %s\n", other.public_key, pair.secret_key);
    refused("mismatch", line, 1, "public-key is not the public key of secret-key");
    refused("junk", "hello\n", 0, "neither public-key = Z85 nor secret-key = Z85");
    refused("empty", "# only a comment\n\n", 0, "no public-key line");
    snprintf(line, sizeof line, "%s/none", dir);
    tap_ok(bp_curve_read_file(line, 0, &back, &err) == -1 && strstr(err.msg, "No such file"),
           "a missing file is refused: %s", err.msg);
    /* the message never quotes a secret */
    snprintf(line, sizeof line, "public-key = %s\nsecret-key = %s\n", other.public_key, pair.secret_key);
    bp_curve_read_file(write_file("mismatch2", line), 1, &back, &err);
    tap_ok(strstr(err.msg, pair.secret_key) == NULL, "no error quotes a secret key");

    const char *loop[] = {"tcp://127.0.0.1:5555", "tcp://127.3.2.1:1", "tcp://localhost:80", "tcp://[::1]:9",
                          "tcp://lo:7", "tcp://10.0.0.1;127.0.0.1:5"};
    for (size_t i = 0; i < sizeof loop / sizeof *loop; i++)
        tap_ok(bp_tcp_is_loopback(loop[i]) == 1, "%s is loopback", loop[i]);
    const char *open_addr[] = {"tcp://0.0.0.0:5555", "tcp://*:1", "tcp://10.1.2.3:80", "tcp://[::]:9",
                               "tcp://eth0:7", "tcp://127.0.0.1.example.com:5", "ipc:///tmp/x"};
    for (size_t i = 0; i < sizeof open_addr / sizeof *open_addr; i++)
        tap_ok(bp_tcp_is_loopback(open_addr[i]) == 0, "%s is not loopback", open_addr[i]);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) tap_diag("cannot remove %s", dir);
    return tap_done();
}
