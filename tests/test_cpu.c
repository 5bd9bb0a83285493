/* Run-time ISA dispatch: detection agrees with what the kernel reports, the
 * SEGC_ISA names parse, and every kernel with per-ISA variants (bf16<->f32
 * conversion, AdamW) gives the same bits at every level this CPU supports.
 * `test_cpu --levels` prints those levels (the Makefile's test-isa loop
 * re-runs the ISA-dependent test binaries under each). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/harness.h"
#include "segc/cpu.h"
#include "segc/optim.h"
#include "segc/params.h"

static segc_isa g_initial;   /* the level the process started with (SEGC_ISA or detected) */

static bool cpuinfo_has(const char *flag) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return false;
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0) continue;
        for (char *tok = strtok(strchr(line, ':') + 1, " \t\n"); tok; tok = strtok(NULL, " \t\n"))
            if (strcmp(tok, flag) == 0) found = true;
        break;
    }
    fclose(f);
    return found;
}

static void test_detection(void **state) {
    segc_isa d = segc_cpu_detected();
    assert_true(d >= SEGC_ISA_AVX2 && d < SEGC_ISA_COUNT);
    assert_true(segc_cpu_isa() <= d);
    /* the kernel only lists features the OS enabled, so its flags bound what we may use */
    bool avx512 = cpuinfo_has("avx512f") && cpuinfo_has("avx512bw") && cpuinfo_has("avx512vl") && cpuinfo_has("avx512dq");
    assert_int_equal(d >= SEGC_ISA_AVX512, avx512);
    if (avx512) assert_int_equal(d >= SEGC_ISA_AVX512_BF16, cpuinfo_has("avx512_bf16"));
    if (d == SEGC_ISA_AVX512_BF16 && cpuinfo_has("amx_tile") && cpuinfo_has("amx_bf16"))
        print_message("note: amx listed by the kernel but permission to use tile data was refused\n");
    if (d == SEGC_ISA_AMX) assert_true(cpuinfo_has("amx_tile") && cpuinfo_has("amx_bf16"));
    const char *env = getenv("SEGC_ISA");
    segc_isa want;
    if (env && segc_isa_parse(env, &want) && want <= d) assert_int_equal(segc_cpu_isa_env(), want);
    char buf[64];
    print_message("detected %s, active %s, levels: %s, build %s\n", segc_isa_name(d), segc_isa_name(segc_cpu_isa()),
                  segc_cpu_levels_str(buf, sizeof buf), segc_build_isa());
}

static void test_names(void **state) {
    for (int i = 0; i < SEGC_ISA_COUNT; i++) {
        segc_isa l;
        assert_true(segc_isa_parse(segc_isa_name((segc_isa)i), &l));
        assert_int_equal(l, i);
    }
    segc_isa l = SEGC_ISA_AVX2;
    assert_false(segc_isa_parse("AVX2", &l));   /* lower case only, as documented */
    assert_false(segc_isa_parse("avx512bf16", &l));
    assert_false(segc_isa_parse("", &l));
    assert_false(segc_isa_parse(NULL, &l));
    assert_false(segc_cpu_set_isa(SEGC_ISA_COUNT));
    if (segc_cpu_detected() < SEGC_ISA_AMX) assert_false(segc_cpu_set_isa(SEGC_ISA_AMX));
    assert_int_equal(segc_cpu_isa(), g_initial);   /* a refused switch changes nothing */
    char small[6];
    segc_cpu_levels_str(small, sizeof small);   /* truncates, stays terminated */
    assert_true(strlen(small) < sizeof small);
}

/* f32 bit patterns that exercise every rounding branch; the rest of the array is random bits
 * (NaNs, subnormals, infinities included) and plain numbers, so some 32-value blocks are all
 * normal (AVX512-BF16's fast path) and others hold a subnormal (its fallback) */
static uint32_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 32);
}
static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void fill_f32(float *x, int64_t n) {
    static const uint32_t special[] = {
        0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x00007fff, 0x00008000, 0x00018000, 0x007fffff,
        0x807fffff, 0x00800000, 0x3f800000, 0x3f808000, 0x3f818000, 0x3f80ffff, 0x3f817fff, 0x7f7fffff,
        0xff7fffff, 0x7f7f8000, 0x7f7f7fff, 0x7f800000, 0xff800000, 0x7f800001, 0x7fc00000, 0xffc00001,
        0x7fffffff, 0xffffffff, 0x7fbfffff, 0x4b800000, 0xc2f6e979, 0x3eaaaaab};
    const int64_t ns = (int64_t)(sizeof special / sizeof special[0]);
    uint64_t s = 12345;
    for (int64_t i = 0; i < n; i++) {
        if (i < ns) x[i] = from_bits(special[i]);
        else if ((i / 4096) % 2 == 0) x[i] = (float)((int64_t)(lcg(&s) % 2000001) - 1000000) * 1e-3f;  /* normal blocks */
        else x[i] = from_bits(lcg(&s));   /* any bits */
    }
    for (int64_t i = 300; i < n; i += 997) x[i] = from_bits(lcg(&s) & 0x807fffffu);   /* scattered subnormals */
}

static void test_bf16_conversion_every_level(void **state) {
    enum { N = 100003 };
    float *x = malloc((N + 1) * sizeof *x), *back = malloc((N + 1) * sizeof *back);
    uint16_t *want = malloc((N + 1) * sizeof *want), *got = malloc((N + 1) * sizeof *got);
    fill_f32(x, N + 1);
    for (int64_t i = 0; i <= N; i++) want[i] = segc_f32_to_bf16(x[i]);
    /* lengths around every vector width and the parallel threshold, at two alignments */
    static const int64_t lens[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 4099, 65536, 65537, N};
    int levels = 0;
    for (int l = 0; l <= (int)segc_cpu_detected(); l++) {
        assert_true(segc_cpu_set_isa((segc_isa)l));
        levels++;
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++)
            for (int off = 0; off <= 1; off++) {
                int64_t n = lens[k];
                memset(got, 0xab, (N + 1) * sizeof *got);
                segc_f32_to_bf16_n(x + off, got + off, n);
                for (int64_t i = 0; i < n; i++)
                    if (got[off + i] != want[off + i])
                        fail_msg("%s: f32->bf16 of 0x%08x gave 0x%04x, scalar 0x%04x (n %lld, index %lld)",
                                 segc_isa_name((segc_isa)l), bits(x[off + i]), got[off + i], want[off + i],
                                 (long long)n, (long long)i);
                /* nothing past the end is written */
                if (off + n <= N) assert_int_equal(got[off + n], 0xabab);
                memset(back, 0xcd, (N + 1) * sizeof *back);
                segc_bf16_to_f32_n(want + off, back + off, n);
                for (int64_t i = 0; i < n; i++)
                    if (bits(back[off + i]) != (uint32_t)want[off + i] << 16)
                        fail_msg("%s: bf16->f32 of 0x%04x gave 0x%08x", segc_isa_name((segc_isa)l), want[off + i],
                                 bits(back[off + i]));
                if (off + n <= N) assert_int_equal(bits(back[off + n]), 0xcdcdcdcdu);
            }
        /* every bf16 bit pattern widens exactly */
        uint16_t all[65536];
        float wide[65536];
        for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
        segc_bf16_to_f32_n(all, wide, 65536);
        for (int i = 0; i < 65536; i++) assert_int_equal(bits(wide[i]), (uint32_t)i << 16);
    }
    assert_true(segc_cpu_set_isa(g_initial));
    print_message("bf16 conversions bitwise equal at %d level(s)\n", levels);
    free(x), free(back), free(want), free(got);
}

/* AdamW: the same steps at every level give the same weights and moments, bit for bit */
static void adamw_run(double beta1, float *out, int64_t *n_out) {
    segc_params p;
    segc_params_init(&p);
    segc_params_add(&p, "a.weight", 2, (const int64_t[]){33, 31}, true);   /* 1023: a masked tail */
    segc_params_add(&p, "b.bias", 1, (const int64_t[]){7}, true);
    segc_params_finalize(&p);
    uint64_t s = 99;
    for (int64_t i = 0; i < p.total; i++) p.data[i] = (float)((int32_t)lcg(&s) % 1000) * 1e-3f;
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_ADAMW, 1e-3);
    oc.beta1 = beta1;   /* 0.9: torch's lerp weight < 0.5; 0.3: the other lerp form */
    oc.weight_decay = 0.01;
    oc.max_grad_norm = 0.5;
    char err[256];
    segc_optimizer *o = segc_optimizer_new(&p, &oc, err, sizeof err);
    if (!o) fail_msg("%s", err);
    for (int step = 0; step < 4; step++) {
        for (int64_t i = 0; i < p.total; i++) p.grad[i] = (float)((int32_t)lcg(&s) % 2001 - 1000) * 1e-4f;
        if (step == 2) p.grad[5] = 1e-42f;   /* a subnormal gradient */
        segc_optimizer_step(o, 1e-3);
    }
    int64_t n = p.total;
    memcpy(out, p.data, (size_t)n * sizeof *out);
    memcpy(out + n, o->exp_avg, (size_t)n * sizeof *out);
    memcpy(out + 2 * n, o->exp_avg_sq, (size_t)n * sizeof *out);
    *n_out = 3 * n;
    segc_optimizer_free(o);
    segc_params_free(&p);
}

static void test_adamw_every_level(void **state) {
    for (int b = 0; b < 2; b++) {
        const double beta1 = b ? 0.3 : 0.9;
        float *ref = calloc(4096, sizeof *ref), *got = calloc(4096, sizeof *got);
        int64_t n_ref = 0, n = 0;
        for (int l = 0; l <= (int)segc_cpu_detected(); l++) {
            assert_true(segc_cpu_set_isa((segc_isa)l));
            adamw_run(beta1, l ? got : ref, l ? &n : &n_ref);
            if (l == 0) continue;
            assert_int_equal(n, n_ref);
            for (int64_t i = 0; i < n; i++)
                if (bits(got[i]) != bits(ref[i]))
                    fail_msg("AdamW (beta1 %.1f) at %s differs from avx2 at %lld: %.9g vs %.9g", beta1,
                             segc_isa_name((segc_isa)l), (long long)i, got[i], ref[i]);
        }
        free(ref), free(got);
    }
    assert_true(segc_cpu_set_isa(g_initial));
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--levels") == 0) {
        char buf[64];
        puts(segc_cpu_levels_str(buf, sizeof buf));
        return 0;
    }
    g_initial = segc_cpu_isa();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detection),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_bf16_conversion_every_level),
        cmocka_unit_test(test_adamw_every_level),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
