/* fixture_path.h — where a C unit test finds its files under tests/fixtures/.
 *
 * Relative to the test's own source path (__FILE__ as the Makefile passes it, e.g.
 * tests/unit/test_metrics.c, so tests run from the repository root), or under
 * $BP_FIXTURES_DIR when set. Never looks at /work/shared. Header-only, static: each test
 * binary has its own copy.
 */
#ifndef BP_FIXTURE_PATH_H
#define BP_FIXTURE_PATH_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char fixture_dir_[1024];

/* Remember tests/fixtures/SUBDIR, found from source_file (pass __FILE__). */
static inline void fixture_path_init(const char *source_file, const char *subdir) {
    const char *env = getenv("BP_FIXTURES_DIR");
    if (env) {
        snprintf(fixture_dir_, sizeof fixture_dir_, "%s/%s", env, subdir);
        return;
    }
    char dir[768];
    snprintf(dir, sizeof dir, "%s", source_file);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else strcpy(dir, ".");
    snprintf(fixture_dir_, sizeof fixture_dir_, "%s/../fixtures/%s", dir, subdir);
}

/* Path of a fixture file. Two buffers used in turn, so one call may name two files. */
static inline const char *fixture(const char *name) {
    static char paths[2][1400];
    static int turn;
    turn ^= 1;
    snprintf(paths[turn], sizeof paths[turn], "%s/%s", fixture_dir_, name);
    return paths[turn];
}

#endif
