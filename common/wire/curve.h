/* wire/curve.h — ZeroMQ CURVE on tcp endpoints: key pairs, key files, and the settings of this
 * process that every tcp endpoint it opens afterwards uses (docs/protocol.md, "Security").
 *
 * Roles follow the socket, not the stage: the side of a tcp endpoint that binds is the CURVE
 * server (its own secret key), the side that connects the client (the server's public key and
 * a key pair of its own: the one set here, else a throwaway pair made for this process). Once
 * a key or a server key is set, every tcp endpoint of the process is CURVE and a tcp endpoint
 * whose role lacks its key is an error; ipc, file and stdio endpoints are local and unchanged.
 * With neither set, a tcp bind on an address outside loopback is allowed with one warning.
 *
 * Key files are text, z85 as zmq_z85_encode writes it (40 characters for 32 bytes):
 *   NAME.pub   "public-key = Z85"                      (give it to the other side)
 *   NAME.key   "public-key = Z85" and "secret-key = Z85" (keep it: mode 0600)
 * Lines starting with '#' are comments.
 *
 * Must never: print (but the one plain-tcp warning), exit, or include a secret key in an error.
 */
#ifndef BP_CURVE_H
#define BP_CURVE_H
#include <stddef.h>

#include "base/log.h"

#define BP_CURVE_Z85_LEN 40   /* a 32-byte key in z85 */

typedef struct bp_curve_keypair {
    char public_key[BP_CURVE_Z85_LEN + 1];   /* z85, NUL-terminated */
    char secret_key[BP_CURVE_Z85_LEN + 1];   /* z85, NUL-terminated; "" in a public-only file */
} bp_curve_keypair;

/* 0 when this libzmq has CURVE (zmq_has("curve")), else -1 with err saying so. The test build
 * (BP_FAULT_INJECTION) answers -1 under BERTPIPE_FAULT=curve:absent, so that line is tested. */
int bp_curve_available(bp_err *err);

/* A new key pair (zmq_curve_keypair). 0, or -1 with err. */
int bp_curve_new_keypair(bp_curve_keypair *pair, bp_err *err);

/* The text of a key file: with_secret 1 for NAME.key, 0 for NAME.pub. Written into buf
 * (512 bytes are enough); returns its length, or -1 when cap is too small. */
int bp_curve_file_text(const bp_curve_keypair *pair, int with_secret, char *buf, size_t cap);

/* Read a key file. want_secret 1: it must hold a secret key whose public key is the one it
 * names (a NAME.key); 0: its public key is read and any secret key ignored (a NAME.pub or a
 * NAME.key). 0, or -1 with err "WHAT (PATH)": unreadable, no key line, a key of the wrong
 * length or with a character outside z85, a public file given as a secret one, a mismatch. */
int bp_curve_read_file(const char *path, int want_secret, bp_curve_keypair *pair, bp_err *err);

/* This process's key pair (from bp_curve_read_file(path, 1, ...)): a bind is a CURVE server
 * with it, a connect a client with it. 0, or -1 with err (CURVE absent, a bad file). */
int bp_curve_set_key_file(const char *path, bp_err *err);
/* The public key of the server(s) this process's tcp connects talk to. 0, or -1 with err. */
int bp_curve_set_server_file(const char *path, bp_err *err);
/* 1 once either is set: every tcp endpoint is then CURVE. */
int bp_curve_enabled(void);

/* For wire/endpoint.c: set up `zmq_socket` for bind (1) or connect (0) on `addr` before it
 * binds or connects. Nothing for an address that is not tcp://. 0, or -1 with err naming addr
 * (a role without its key, a socket option refused). */
int bp_curve_prepare_socket(void *zmq_socket, const char *addr, int bind, bp_err *err);

/* 1 when a tcp:// address's host is loopback (127.0.0.0/8, ::1, localhost, the interface lo). */
int bp_tcp_is_loopback(const char *addr);

#endif
