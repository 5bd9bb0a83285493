/* What a user sees first: `segc --version` (version, build flags, the CPU's
 * ISA extensions, oneDNN) and help for the program and for every command
 * (`segc COMMAND -h`, `--help`, `segc help COMMAND`), each exiting 0 with a
 * usage line; a wrong command or option exits 2 with the usage on stderr.
 * Runs BUILD/segc next to BUILD/tests (make test builds both). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/harness.h"

static char g_cli[1024];

static int run_capture(const char *args, char *out, size_t n) {
    char full[2048];
    snprintf(full, sizeof full, "%s %s 2>&1", g_cli, args);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    size_t got = fread(out, 1, n - 1, p);
    out[got] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void need_cli(void) {
    if (access(g_cli, X_OK) != 0) fail_msg("%s not built (make test builds it)", g_cli);
}

static void test_version(void **state) {
    need_cli();
    static char out[1 << 14];
    assert_int_equal(run_capture("--version", out, sizeof out), 0);
    print_message("%s", out);
    const char *want[] = {"segc 0.", "build: ", "flags: ", "cpu ISA extensions:", "avx2", "oneDNN: ", "dispatching to"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(out, want[i])) fail_msg("segc --version lacks '%s'", want[i]);
}

static void test_help_for_every_command(void **state) {
    need_cli();
    static char out[1 << 14];
    const char *cmds[] = {"train", "eval", "predict", "bench", "models", "data", "tune"};
    assert_int_equal(run_capture("--help", out, sizeof out), 0);
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
        if (!strstr(out, cmds[i])) fail_msg("segc --help does not list '%s'", cmds[i]);
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        const char *forms[] = {"%s -h", "%s --help", "help %s"};
        for (size_t f = 0; f < 3; f++) {
            char args[64], usage[64];
            snprintf(args, sizeof args, forms[f], cmds[i]);
            snprintf(usage, sizeof usage, "usage: segc %s", cmds[i]);
            int rc = run_capture(args, out, sizeof out);
            if (rc != 0 || !strstr(out, usage)) fail_msg("segc %s: exit %d, output:\n%s", args, rc, out);
        }
    }
    assert_int_equal(run_capture("nosuchcommand", out, sizeof out), 2);
    assert_non_null(strstr(out, "unknown command"));
    assert_int_equal(run_capture("eval --bogus-option", out, sizeof out), 2);
    assert_non_null(strstr(out, "usage: segc eval"));
    assert_int_equal(run_capture("predict --checkpoint x.safetensors --out /tmp --draw-threshold 1.5 a.png", out, sizeof out), 2);
    if (!strstr(out, "--draw-threshold") || !strstr(out, "'1.5'")) fail_msg("unexpected message: %s", out);
}

int main(int argc, char **argv) {
    (void)argc;
    /* BUILD/tests/test_cli -> BUILD/segc */
    snprintf(g_cli, sizeof g_cli, "%s", argv[0]);
    char *slash = strrchr(g_cli, '/');
    if (slash) *slash = 0;
    else snprintf(g_cli, sizeof g_cli, ".");
    strncat(g_cli, "/../segc", sizeof g_cli - strlen(g_cli) - 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_help_for_every_command),
    };
    return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
