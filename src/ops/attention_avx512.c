/* attention.c compiled a second time with AVX-512 enabled (Makefile: ISA_AVX512_OBJ), for
 * CPUs whose segc_cpu_isa() is avx512 or above. Only segc_attention_avx512 is exported;
 * nothing here runs unless the baseline object dispatches to it. */
#define SEGC_ISA_VARIANT_AVX512
#include "attention.c"
