/* CPU features and run-time ISA dispatch.
 *
 * segc is built for one baseline (x86-64-v3: AVX2 + FMA + F16C + BMI2, which
 * every machine segc targets has) and picks the faster kernels a CPU offers at
 * run time, once, from CPUID and the OS's saved-state mask (XCR0), so one
 * binary runs on an AVX2-only AMD machine and an AMX Intel one and the two
 * test the same code. The levels are ordered; each includes the ones below:
 *
 *   avx2         the baseline kernels (the build's own instruction set)
 *   avx512       AVX-512 F/BW/VL/DQ kernels (AdamW, bf16<->f32 conversions)
 *                and AVX-512 compiles of GroupNorm/InstanceNorm, the
 *                activations and resize+cross-entropy (the src/ops/..._avx512.c files)
 *   avx512_bf16  + VCVTNE2PS2BF16 for f32->bf16 conversion, and the bf16 softmax
 *                and attention-probability rows (src/ops/..._avx512bf16.c)
 *   amx          + oneDNN may use AMX tiles for its bf16 GEMM/convolution
 *
 * AdamW and the conversions give bitwise the same results at every level
 * (same operations in the same order, no FMA contraction). The AVX-512
 * compiles of the normalisation and loss files sum in 16-lane instead of
 * 8-lane order, so they agree with the avx2 level to float rounding; every
 * level is deterministic on its own (same seed, threads and level: same
 * bits). oneDNN's primitives differ between ISAs within float rounding.
 *
 * SEGC_ISA=avx2|avx512|avx512_bf16|amx in the environment, read once at the
 * first query, caps the level (a higher value than the CPU supports is
 * ignored with a warning) and, when set before the first oneDNN call, caps
 * oneDNN's ISA too, so a test run under SEGC_ISA=avx2 on an AMX machine runs
 * what an AVX2 machine runs. */
#ifndef SEGC_CPU_H
#define SEGC_CPU_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SEGC_ISA_AVX2 = 0,
    SEGC_ISA_AVX512,
    SEGC_ISA_AVX512_BF16,
    SEGC_ISA_AMX,
    SEGC_ISA_COUNT
} segc_isa;

/* Highest level this CPU and OS support (CPUID + XCR0; AMX also needs the
 * kernel's permission for tile data, which is requested here). */
segc_isa segc_cpu_detected(void);
/* Level the kernels use now: detected, capped by SEGC_ISA. */
segc_isa segc_cpu_isa(void);
/* Level forced by SEGC_ISA (or SEGC_ISA_COUNT when unset or invalid). */
segc_isa segc_cpu_isa_env(void);
/* Switch segc's own kernels to level (tests re-run kernels under each level
 * in one process). Returns false, changing nothing, above the detected level.
 * oneDNN's ISA cannot change once it is initialised: only SEGC_ISA caps it. */
bool segc_cpu_set_isa(segc_isa level);
const char *segc_isa_name(segc_isa level);
/* "avx2" etc. -> level; false for an unknown name */
bool segc_isa_parse(const char *name, segc_isa *out);
/* Space-separated names of the levels this CPU supports ("avx2 avx512 ..."). */
const char *segc_cpu_levels_str(char *buf, size_t n);
/* The baseline the library was compiled for ("x86-64-v3", or "native"). */
const char *segc_build_isa(void);

/* For kernel files: a function compiled for a level above the baseline, called
 * only after segc_cpu_isa() said that level is active. */
#define SEGC_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define SEGC_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

#ifdef __cplusplus
}
#endif
#endif
