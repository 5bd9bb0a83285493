/* CPU feature detection and the run-time ISA level (see segc/cpu.h).
 *
 * Detection reads CPUID for what the CPU implements and XCR0 (xgetbv) for what
 * the OS saves on a context switch: a CPU with AVX-512 under an OS (or a VM)
 * that does not enable the ZMM state must not run AVX-512 code. AMX tile data
 * additionally needs a per-process permission from Linux (arch_prctl). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "segc/cpu.h"

/* ---- the baseline guard ----
 * Everything else in the binary may use the baseline's instructions (AVX2,
 * FMA), so a CPU without them would die on the first one with SIGILL and no
 * word why. This constructor runs before main and is compiled for plain
 * x86-64 (no intrinsics, raw cpuid), so it can say what is missing. */
#if defined(__AVX2__) && !defined(SEGC_NO_BASELINE_GUARD)
__attribute__((target("arch=x86-64"))) static void cpuid_raw(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}
__attribute__((constructor(101), target("arch=x86-64"))) static void baseline_guard(void) {
    uint32_t r[4];
    cpuid_raw(0, 0, r);
    uint32_t max_leaf = r[0];
    cpuid_raw(1, 0, r);
    int ok = (r[2] >> 12 & 1) && (r[2] >> 27 & 1) && (r[2] >> 28 & 1);   /* FMA, OSXSAVE, AVX */
    if (ok) {
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        ok = (lo & 6) == 6;   /* the OS saves XMM and YMM state */
    }
    if (ok && max_leaf >= 7) {
        cpuid_raw(7, 0, r);
        ok = r[1] >> 5 & 1;   /* AVX2 */
    } else {
        ok = 0;
    }
    if (ok) return;
    static const char msg[] = "segc: this build needs an x86-64-v3 CPU (AVX2 and FMA, with OS support); this CPU "
                              "lacks them. Rebuild for it with `make ARCH=\"-march=x86-64-v2\"` (slower) or `make NATIVE=1`.\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(132);   /* what a shell reports for SIGILL: the failure this replaces */
}
#endif

/* ---- detection ---- */
static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static segc_isa detect(void) {
    uint32_t r[4];
    cpuid(0, 0, r);
    const uint32_t max_leaf = r[0];
    if (max_leaf < 7) return SEGC_ISA_AVX2;   /* the guard has vouched for the baseline */
    cpuid(1, 0, r);
    const uint64_t xcr0 = (r[2] >> 27 & 1) ? xgetbv0() : 0;
    cpuid(7, 0, r);
    const uint32_t b7 = r[1], d7 = r[3], max_sub7 = r[0];
    uint32_t a71 = 0;
    if (max_sub7 >= 1) {
        cpuid(7, 1, r);
        a71 = r[0];
    }
    /* AVX-512 F, DQ, BW, VL (oneDNN's "avx512_core"); XCR0: SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM */
    const bool avx512 = (b7 >> 16 & 1) && (b7 >> 17 & 1) && (b7 >> 30 & 1) && (b7 >> 31 & 1) && (xcr0 & 0xe6) == 0xe6;
    if (!avx512) return SEGC_ISA_AVX2;
    if (!(a71 >> 5 & 1)) return SEGC_ISA_AVX512;
    /* AMX-TILE and AMX-BF16, XCR0 TILECFG + TILEDATA, and Linux's permission to use tile data */
    const bool amx_cpu = (d7 >> 24 & 1) && (d7 >> 22 & 1) && (xcr0 & (3ull << 17)) == (3ull << 17);
    if (amx_cpu && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0) return SEGC_ISA_AMX;
    return SEGC_ISA_AVX512_BF16;
}

/* ---- the level, chosen once ---- */
static const char *const isa_names[SEGC_ISA_COUNT] = {"avx2", "avx512", "avx512_bf16", "amx"};
static segc_isa g_detected = SEGC_ISA_AVX2, g_env = SEGC_ISA_COUNT;
static int g_active = SEGC_ISA_AVX2;   /* read by every dispatching kernel: atomics, no lock */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

const char *segc_isa_name(segc_isa l) { return (unsigned)l < SEGC_ISA_COUNT ? isa_names[l] : "?"; }

bool segc_isa_parse(const char *name, segc_isa *out) {
    for (int i = 0; i < SEGC_ISA_COUNT; i++)
        if (name && strcmp(name, isa_names[i]) == 0) {
            *out = (segc_isa)i;
            return true;
        }
    return false;
}

static void init_level(void) {
    g_detected = detect();
    segc_isa level = g_detected;
    const char *env = getenv("SEGC_ISA");
    if (env && *env) {
        segc_isa want;
        if (!segc_isa_parse(env, &want))
            fprintf(stderr, "segc: SEGC_ISA=%s is not one of avx2, avx512, avx512_bf16, amx; using %s\n", env,
                    isa_names[g_detected]);
        else if (want > g_detected)
            fprintf(stderr, "segc: SEGC_ISA=%s is above what this CPU supports; using %s\n", env, isa_names[g_detected]);
        else
            g_env = level = want;
    }
    __atomic_store_n(&g_active, (int)level, __ATOMIC_RELEASE);
}

segc_isa segc_cpu_detected(void) {
    pthread_once(&g_once, init_level);
    return g_detected;
}
segc_isa segc_cpu_isa(void) {
    pthread_once(&g_once, init_level);
    return (segc_isa)__atomic_load_n(&g_active, __ATOMIC_ACQUIRE);
}
segc_isa segc_cpu_isa_env(void) {
    pthread_once(&g_once, init_level);
    return g_env;
}
bool segc_cpu_set_isa(segc_isa level) {
    pthread_once(&g_once, init_level);
    if ((unsigned)level > (unsigned)g_detected) return false;
    __atomic_store_n(&g_active, (int)level, __ATOMIC_RELEASE);
    return true;
}

const char *segc_cpu_levels_str(char *buf, size_t n) {
    segc_isa top = segc_cpu_detected();
    size_t k = 0;
    if (n) buf[0] = 0;
    for (int i = 0; i <= (int)top && k < n; i++) {
        int w = snprintf(buf + k, n - k, "%s%s", i ? " " : "", isa_names[i]);
        if (w < 0) break;
        k += (size_t)w;
    }
    return buf;
}

const char *segc_build_isa(void) {
#if defined(SEGC_BUILD_NATIVE)
    return "native";
#elif defined(__AVX2__)
    return "x86-64-v3";
#else
    return "x86-64-v2";
#endif
}
