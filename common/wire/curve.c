/* wire/curve.c — CURVE key files and the process's CURVE settings for tcp sockets (see curve.h).
 * Must never: put a secret key in an error or a log line, print (but the one plain-tcp
 * warning), or exit. */
#include "wire/curve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static const char z85_alphabet[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

int bp_curve_available(bp_err *err) {
    int has = zmq_has("curve");
#ifdef BP_FAULT_INJECTION
    /* The test build can act as a libzmq built without libsodium: BERTPIPE_FAULT=curve:absent. */
    const char *fault = getenv("BERTPIPE_FAULT");
    if (fault && !strcmp(fault, "curve:absent")) has = 0;
#endif
    if (has) return 0;
    return bp_err_set(err, "this libzmq has no CURVE security (it was built without libsodium): "
                           "install a libzmq with CURVE, or use plain tcp on loopback only");
}

int bp_curve_new_keypair(bp_curve_keypair *pair, bp_err *err) {
    if (bp_curve_available(err)) return -1;
    if (zmq_curve_keypair(pair->public_key, pair->secret_key))
        return bp_err_set(err, "cannot make a CURVE key pair: %s", zmq_strerror(errno));
    return 0;
}

int bp_curve_file_text(const bp_curve_keypair *pair, int with_secret, char *buf, size_t cap) {
    int n = with_secret
                ? snprintf(buf, cap,
                           "# bertpipe CURVE key pair: secret: keep it on this host (mode 0600) and give the .pub file to peers\n"
                           "public-key = %s\nsecret-key = %s\n",
                           pair->public_key, pair->secret_key)
                : snprintf(buf, cap, "# bertpipe CURVE public key: for the peers that connect to the holder of the .key file\n"
                                     "public-key = %s\n",
                           pair->public_key);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* A key's z85 text: 40 characters of the alphabet. 0, or -1 with err naming the field. */
static int check_z85(const char *field, const char *value, const char *path, bp_err *err) {
    size_t len = strlen(value);
    if (len != BP_CURVE_Z85_LEN)
        return bp_err_set(err, "%s is %zu characters, want %d (a 32-byte key in z85) (%s)", field, len,
                          BP_CURVE_Z85_LEN, path);
    for (size_t i = 0; i < len; i++)
        if (!strchr(z85_alphabet, value[i]))
            return bp_err_set(err, "%s has a character that is not z85 at column %zu (%s)", field, i + 1, path);
    uint8_t bin[32];
    if (!zmq_z85_decode(bin, value)) return bp_err_set(err, "%s is not valid z85 (%s)", field, path);
    return 0;
}

/* "NAME = VALUE" on one line (the value trimmed): the value, or NULL when the line is another. */
static char *field_value(char *line, const char *name) {
    size_t n = strlen(name);
    if (strncmp(line, name, n)) return NULL;
    char *p = line + n;
    while (*p == ' ' || *p == '\t') p++;
    if (*p != '=') return NULL;
    p++;
    while (*p == ' ' || *p == '\t') p++;
    char *end = p + strlen(p);
    while (end > p && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t')) *--end = 0;
    return p;
}

int bp_curve_read_file(const char *path, int want_secret, bp_curve_keypair *pair, bp_err *err) {
    memset(pair, 0, sizeof *pair);
    FILE *f = fopen(path, "r");
    if (!f) return bp_err_set(err, "cannot read the key file: %s (%s)", strerror(errno), path);
    char line[256];
    int have_public = 0, have_secret = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[strspn(line, " \t\r\n")] == 0) continue;
        char *value;
        if ((value = field_value(line, "public-key"))) {
            rc = check_z85("public-key", value, path, err);
            if (rc == 0) snprintf(pair->public_key, sizeof pair->public_key, "%s", value);
            have_public = 1;
        } else if ((value = field_value(line, "secret-key"))) {
            rc = check_z85("secret-key", value, path, err);
            if (rc == 0) snprintf(pair->secret_key, sizeof pair->secret_key, "%s", value);
            have_secret = 1;
        } else {
            rc = bp_err_set(err, "a line that is neither public-key = Z85 nor secret-key = Z85 (not a bertpipe key file?) (%s)",
                            path);
        }
    }
    if (rc == 0 && ferror(f)) rc = bp_err_set(err, "cannot read the key file: %s (%s)", strerror(errno), path);
    fclose(f);
    if (rc) return -1;
    if (!have_public) return bp_err_set(err, "no public-key line (not a bertpipe key file?) (%s)", path);
    if (!want_secret) {
        memset(pair->secret_key, 0, sizeof pair->secret_key);
        return 0;
    }
    if (!have_secret)
        return bp_err_set(err, "no secret-key: a public key file where this process's own key pair is wanted "
                               "(give NAME.key, which keygen keeps with NAME.pub) (%s)", path);
    char derived[BP_CURVE_Z85_LEN + 1];
    if (zmq_curve_public(derived, pair->secret_key))
        return bp_err_set(err, "cannot derive the public key: %s (%s)", zmq_strerror(errno), path);
    if (strcmp(derived, pair->public_key))
        return bp_err_set(err, "public-key is not the public key of secret-key (%s)", path);
    return 0;
}

/* ---- this process's settings -------------------------------------------------------- */

static struct {
    int have_key, have_server, have_throwaway, warned_plain;
    bp_curve_keypair own, throwaway;
    char server_public[BP_CURVE_Z85_LEN + 1];
} settings;

int bp_curve_set_key_file(const char *path, bp_err *err) {
    if (bp_curve_available(err) || bp_curve_read_file(path, 1, &settings.own, err)) return -1;
    settings.have_key = 1;
    return 0;
}

int bp_curve_set_server_file(const char *path, bp_err *err) {
    bp_curve_keypair server;
    if (bp_curve_available(err) || bp_curve_read_file(path, 0, &server, err)) return -1;
    memcpy(settings.server_public, server.public_key, sizeof settings.server_public);
    settings.have_server = 1;
    return 0;
}

int bp_curve_enabled(void) { return settings.have_key || settings.have_server; }

int bp_tcp_is_loopback(const char *addr) {
    if (strncmp(addr, "tcp://", 6)) return 0;
    const char *host = addr + 6;
    const char *semi = strchr(host, ';');   /* "source;destination": the destination counts */
    if (semi) host = semi + 1;
    const char *colon = strrchr(host, ':');
    size_t len = colon ? (size_t)(colon - host) : strlen(host);
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
    }
    char name[INET6_ADDRSTRLEN + 1];
    if (len >= sizeof name) return 0;
    memcpy(name, host, len);
    name[len] = 0;
    if (!strcmp(name, "localhost") || !strcmp(name, "lo")) return 1;
    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton(AF_INET, name, &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, name, &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

static int set_key(void *sock, int option, const char *z85, const char *addr, bp_err *err) {
    if (zmq_setsockopt(sock, option, z85, BP_CURVE_Z85_LEN + 1))
        return bp_err_set(err, "cannot set up CURVE: %s (%s)", zmq_strerror(errno), addr);
    return 0;
}

int bp_curve_prepare_socket(void *sock, const char *addr, int bind, bp_err *err) {
    if (strncmp(addr, "tcp://", 6)) return 0;
    if (!bp_curve_enabled()) {
        if (bind && !bp_tcp_is_loopback(addr) && !settings.warned_plain) {
            settings.warned_plain = 1;
            bp_warn("plain tcp on %s is unauthenticated and unencrypted; use --curve-key FILE "
                    "(see 'bertpipe keygen --help')", addr);
        }
        return 0;
    }
    if (bind) {
        if (!settings.have_key)
            return bp_err_set(err, "a CURVE server needs its own key pair to bind: give --curve-key FILE "
                                   "or BERTPIPE_CURVE_KEY (%s)", addr);
        int one = 1;
        if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one))
            return bp_err_set(err, "cannot set up CURVE: %s (%s)", zmq_strerror(errno), addr);
        return set_key(sock, ZMQ_CURVE_SECRETKEY, settings.own.secret_key, addr, err);
    }
    if (!settings.have_server)
        return bp_err_set(err, "a CURVE client needs the server's public key to connect: give --curve-server FILE "
                               "or BERTPIPE_CURVE_SERVER (%s)", addr);
    const bp_curve_keypair *mine = &settings.own;
    if (!settings.have_key) {
        /* The server lets in any client that knows its public key, so a client without a
         * key file of its own gets a pair made for this process. */
        if (!settings.have_throwaway && bp_curve_new_keypair(&settings.throwaway, err)) return -1;
        settings.have_throwaway = 1;
        mine = &settings.throwaway;
    }
    if (set_key(sock, ZMQ_CURVE_SERVERKEY, settings.server_public, addr, err) ||
        set_key(sock, ZMQ_CURVE_PUBLICKEY, mine->public_key, addr, err) ||
        set_key(sock, ZMQ_CURVE_SECRETKEY, mine->secret_key, addr, err))
        return -1;
    return 0;
}
