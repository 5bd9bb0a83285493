/* `segc --version`: what a bug report needs to reproduce a run on another
 * machine -- segc's version, how this binary was built, which instruction
 * set extensions this CPU offers (and so which kernels can run), and the
 * oneDNN it is linked against with the ISA oneDNN dispatches to here. */
#include <omp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "cli.h"
#include "segc/version.h"

#ifndef SEGC_BUILD_FLAGS
#define SEGC_BUILD_FLAGS "(not recorded)"   /* set by mk/version.mk */
#endif
#ifndef SEGC_BUILD_CC
#define SEGC_BUILD_CC "cc"
#endif

/* the ISA extensions segc's and oneDNN's kernels distinguish, as /proc/cpuinfo names them */
static const char *const isa_flags[] = {"sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw",
                                        "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                                        "amx_bf16", "amx_int8"};

/* 'flags' line of the first CPU in /proc/cpuinfo (malloc'd) and its model name */
static char *cpu_flags(char *model, size_t mn) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    snprintf(model, mn, "unknown CPU");
    if (!f) return NULL;
    char *line = NULL, *flags = NULL;
    size_t cap = 0;
    bool have_model = false;
    while (getline(&line, &cap, f) > 0 && !flags) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        char *v = colon + 1 + (colon[1] == ' ');
        v[strcspn(v, "\n")] = 0;
        if (!have_model && !strncmp(line, "model name", 10)) {
            snprintf(model, mn, "%s", v);
            have_model = true;
        } else if (!strncmp(line, "flags", 5)) {
            flags = strdup(v);
        }
    }
    free(line);
    fclose(f);
    return flags;
}

static bool has_flag(const char *flags, const char *name) {
    size_t n = strlen(name);
    for (const char *p = flags; p && (p = strstr(p, name)); p += n)
        if ((p == flags || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0)) return true;
    return false;
}

static const char *dnnl_isa_name(dnnl_cpu_isa_t isa) {
    switch ((int)isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
    }
}

int segc_cli_version(void) {
    printf("segc %s\n", SEGC_VERSION);
    printf("build: %s %s, flags: %s\n", SEGC_BUILD_CC, __VERSION__, SEGC_BUILD_FLAGS);
    /* what the compiler was allowed to assume: code outside the run-time
     * dispatched kernels needs these on any CPU that runs this binary */
    printf("compiled for:");
#ifdef __AVX2__
    printf(" avx2");
#endif
#ifdef __FMA__
    printf(" fma");
#endif
#ifdef __AVX512F__
    printf(" avx512f");
#endif
#ifdef __AVX512BF16__
    printf(" avx512_bf16");
#endif
#if !defined(__AVX2__) && !defined(__AVX512F__)
    printf(" baseline x86-64");
#endif
    printf("\n");
    char model[256];
    char *flags = cpu_flags(model, sizeof model);
    printf("cpu: %s, %d OpenMP threads\n", model, omp_get_max_threads());
    printf("cpu ISA extensions:");
    if (!flags) printf(" unknown (no /proc/cpuinfo)");
    for (size_t i = 0; flags && i < sizeof isa_flags / sizeof *isa_flags; i++)
        printf(" %s%s", has_flag(flags, isa_flags[i]) ? "+" : "-", isa_flags[i]);
    printf("\n");
    if (flags) {
        bool bf16_hw = has_flag(flags, "avx512_bf16") || has_flag(flags, "amx_bf16");
        printf("bf16: %s\n", bf16_hw ? "native (oneDNN's bf16 kernels)" : "converted to f32 and computed in f32 (no avx512_bf16/amx_bf16)");
    }
    free(flags);
    const dnnl_version_t *v = dnnl_version();
    printf("oneDNN: %d.%d.%d (%s), dispatching to %s here\n", v->major, v->minor, v->patch, v->hash ? v->hash : "?",
           dnnl_isa_name(dnnl_get_effective_cpu_isa()));
    return 0;
}
