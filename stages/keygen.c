/* keygen — make a CURVE key pair for bertpipe's tcp endpoints: NAME.key and NAME.pub.
 *
 * The side of a tcp endpoint that binds (usually the consumer) is the CURVE server and runs
 * with --curve-key NAME.key; each side that connects to it gets --curve-server NAME.pub.
 * Both files are written atomically (a reader sees no file or the whole one); NAME.key is mode
 * 0600 from the start.
 * Must never: overwrite a key without --force, print a secret key, or leave a half-written file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/atomic_file.h"
#include "stage/stage.h"
#include "wire/curve.h"

static const char usage[] =
    "usage: keygen --out DIR/NAME [--force]\n"
    "Make a CURVE key pair for tcp endpoints: DIR/NAME.key (public and secret key, mode 0600) and\n"
    "DIR/NAME.pub (the public key, mode 0644), z85 text.\n"
    "The side that binds a tcp endpoint runs with --curve-key NAME.key; every side that connects\n"
    "to it with --curve-server NAME.pub (docs/protocol.md, \"Security: CURVE on tcp\").\n"
    "  --out DIR/NAME    where to write NAME.key and NAME.pub (DIR must exist)\n"
    "  --force           replace existing files (default: refuse)\n"
    "  --version         print \"keygen (bertpipe) VERSION\" and exit\n";

/* Write one key file atomically with `mode` (set on the temporary, before it gets the name). */
static void write_key_file(const char *path, const bp_curve_keypair *pair, int with_secret, mode_t mode) {
    char text[512];
    int len = bp_curve_file_text(pair, with_secret, text, sizeof text);
    if (len < 0) bp_die(1, path, "key file text too long");
    af_file file;
    bp_err err;
    if (af_open(&file, path, &err)) bp_die_err(&err);
    if (fchmod(fileno(file.fp), mode) || fwrite(text, 1, (size_t)len, file.fp) != (size_t)len) {
        af_abort(&file);
        bp_die(1, path, "cannot write the key file");
    }
    if (af_commit(&file, &err)) bp_die_err(&err);
}

int main(int argc, char **argv) {
    /* keygen opens no endpoint: the CURVE settings a pipeline passes down (perhaps naming the
     * very files this run is to make) are not its business. */
    unsetenv("BERTPIPE_CURVE_KEY");
    unsetenv("BERTPIPE_CURVE_SERVER");
    bp_io_opts io;
    bp_stage_init(&io, argv);
    bp_set_usage(usage);
    int force = 0;
    const char *base = NULL;
    static const struct option longopts[] = {{"out", required_argument, 0, 'o'}, {"force", no_argument, 0, 'f'},
                                             {"version", no_argument, 0, BP_OPT_VERSION},
                                             {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (opt == BP_OPT_VERSION && bp_io_option(&io, opt, optarg)) continue;
        switch (opt) {
        case 'o': base = optarg; break;
        case 'f': force = 1; break;
        case 'h': fputs(usage, stdout); return 0;
        default: bp_usage_error();
        }
    }
    if (optind < argc) bp_usage_die("unexpected argument '%s'", argv[optind]);
    if (!base || !*base) bp_usage_die("--out DIR/NAME is required");

    size_t n = strlen(base) + sizeof ".key";
    char *key_path = malloc(n), *pub_path = malloc(n);
    if (!key_path || !pub_path) bp_die(1, NULL, "out of memory");
    snprintf(key_path, n, "%s.key", base);
    snprintf(pub_path, n, "%s.pub", base);
    if (!force && access(key_path, F_OK) == 0) bp_die(1, key_path, "the key file exists (--force replaces it)");
    if (!force && access(pub_path, F_OK) == 0) bp_die(1, pub_path, "the key file exists (--force replaces it)");

    bp_curve_keypair pair;
    bp_err err;
    if (bp_curve_new_keypair(&pair, &err)) bp_die_err(&err);
    /* The secret first: a NAME.pub never exists without the NAME.key it belongs to. */
    write_key_file(key_path, &pair, 1, 0600);
    write_key_file(pub_path, &pair, 0, 0644);
    bp_log("wrote %s (keep it here) and %s (give it to the peers that connect)", key_path, pub_path);
    free(key_path);
    free(pub_path);
    return 0;
}
