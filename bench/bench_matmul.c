/* Benchmarks for matmul / attention (fwd and bwd, f32 and bf16) and a
 * peak-FLOP/s probe through the GEMM path segc_matmul uses. One JSON line per
 * case; bench/torch_matmul.py times the same cases in PyTorch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/ops.h"

#include "bench_common.h"

typedef segc_tensor *(*build_fn)(segc_ctx *ctx, segc_tensor **ins);

/* heap input: normal(0, scale) values in dtype dt, requiring grad */
static segc_tensor *input(segc_rng *rng, segc_dtype dt, int ndim, const int64_t *shape, float scale) {
    segc_tensor *t = segc_tensor_heap(dt, ndim, shape);
    int64_t n = segc_numel(t);
    float *f = malloc((size_t)n * sizeof *f);
    segc_rng_fill_normal(rng, f, n, 0, scale);
    segc_store_f32(t, f);
    free(f);
    t->requires_grad = true;
    return t;
}

static segc_tensor *build_matmul(segc_ctx *ctx, void *u) {
    segc_tensor **ins = u;
    return segc_matmul(ctx, ins[0], ins[1], false, false);
}
static segc_tensor *build_attention(segc_ctx *ctx, void *u) {
    segc_tensor **ins = u;
    return segc_attention(ctx, ins[0], ins[1], ins[2], 1, 1.0f / sqrtf((float)ins[0]->shape[2]));
}

/* C = A B, n^3, through segc_gemm_run exactly as segc_matmul calls it */
static double peak_gflops(segc_ctx *ctx, segc_dtype dt, int64_t n) {
    segc_rng rng;
    segc_rng_init(&rng, 1);
    segc_tensor *a = input(&rng, dt, 2, (int64_t[]){n, n}, 1), *b = input(&rng, dt, 2, (int64_t[]){n, n}, 1);
    segc_tensor *c = segc_tensor_heap(dt, 2, (int64_t[]){n, n});
    segc_gemm g = {.batch = 1, .M = n, .N = n, .K = n, .a = a->data, .a_dtype = dt, .a_rs = n, .a_cs = 1,
                   .b = b->data, .b_dtype = dt, .b_rs = n, .b_cs = 1, .c = c->data, .c_dtype = dt, .c_rs = n,
                   .alpha = 1.0f};
    double best = 1e30;
    for (int i = 0; i < 4; i++) {   /* one warm-up, best of three (a probe of what the machine can do) */
        segc_ctx_step_begin(ctx);
        double t0 = segc_now_s();
        if (!segc_gemm_run(ctx, "peak_gemm", &g)) {
            fprintf(stderr, "bench: %s\n", segc_last_error(ctx));
            exit(1);
        }
        double t = segc_now_s() - t0;
        if (i > 0 && t < best) best = t;
    }
    segc_tensor_free(a), segc_tensor_free(b), segc_tensor_free(c);
    return 2.0 * n * n * n / best * 1e-9;
}

int main(void) {
    segc_ctx *ctx = segc_ctx_new(1);
    segc_set_num_threads(ctx, 2);
    const char *dname[2] = {"f32", "bf16"};
    double peak[2];
    for (int d = 0; d < 2; d++) {
        peak[d] = peak_gflops(ctx, d ? SEGC_BF16 : SEGC_F32, 4096);
        printf("{\"op\": \"peak_gemm\", \"shape\": \"4096x4096x4096\", \"dtype\": \"%s\", \"gflops\": %.1f, "
               "\"native_bf16\": %s}\n", dname[d], peak[d], segc_gemm_native_bf16() ? "true" : "false");
        fflush(stdout);
    }
    for (int d = 0; d < 2; d++) {
        segc_dtype dt = d ? SEGC_BF16 : SEGC_F32;
        ctx->bf16_grads = d && bench_bf16_grads();   /* bf16: gradients as bf16 training keeps them */
        segc_rng rng;
        segc_rng_init(&rng, 2);
        {   /* matmul M x K x N */
            int64_t M = 4096, K = 1024, N = 1024;
            segc_tensor *ins[2] = {input(&rng, dt, 2, (int64_t[]){M, K}, 1), input(&rng, dt, 2, (int64_t[]){K, N}, 0.03f)};
            float *gout = malloc((size_t)(M * N) * sizeof *gout);
            segc_rng_fill_normal(&rng, gout, M * N, 0, 1);
            uint16_t *gout16 = bench_bf16_copy(gout, M * N);
            for (int bwd = 0; bwd < 2; bwd++) {
                double ms = bench_op_ms((bench_op){ctx, build_matmul, ins, {ins[0], ins[1]}, bwd, gout, gout16});
                double gf = 2.0 * M * N * K * (bwd ? 2 : 1) / (ms * 1e-3) * 1e-9;
                printf("{\"op\": \"matmul\", \"shape\": \"%lldx%lldx%lld\", \"dtype\": \"%s\", \"pass\": \"%s\", "
                       "\"segc_ms\": %.3f, \"gflops\": %.1f, \"peak_frac\": %.3f}\n", (long long)M, (long long)K,
                       (long long)N, dname[d], bwd ? "bwd" : "fwd", ms, gf, gf / peak[d]);
                fflush(stdout);
            }
            free(gout), free(gout16);
            segc_tensor_free(ins[0]), segc_tensor_free(ins[1]);
        }
        {   /* attention B x Nq x Nk x C, one head */
            int64_t B = 2, Nq = 16384, Nk = 256, C = 32;
            segc_tensor *ins[3] = {input(&rng, dt, 3, (int64_t[]){B, Nq, C}, 1), input(&rng, dt, 3, (int64_t[]){B, Nk, C}, 1),
                                   input(&rng, dt, 3, (int64_t[]){B, Nk, C}, 1)};
            float *gout = malloc((size_t)(B * Nq * C) * sizeof *gout);
            segc_rng_fill_normal(&rng, gout, B * Nq * C, 0, 1);
            uint16_t *gout16 = bench_bf16_copy(gout, B * Nq * C);
            for (int bwd = 0; bwd < 2; bwd++) {
                double ms = bench_op_ms((bench_op){ctx, build_attention, ins, {ins[0], ins[1], ins[2]}, bwd, gout, gout16});
                double gf = 4.0 * B * Nq * Nk * C * (bwd ? 2 : 1) / (ms * 1e-3) * 1e-9;
                printf("{\"op\": \"attention\", \"shape\": \"%lldx%lldx%lldx%lld\", \"dtype\": \"%s\", \"pass\": \"%s\", "
                       "\"segc_ms\": %.3f, \"gflops\": %.1f}\n", (long long)B, (long long)Nq, (long long)Nk,
                       (long long)C, dname[d], bwd ? "bwd" : "fwd", ms, gf);
                fflush(stdout);
            }
            free(gout), free(gout16);
            for (int i = 0; i < 3; i++) segc_tensor_free(ins[i]);
        }
    }
    segc_ctx_free(ctx);
    return 0;
}
