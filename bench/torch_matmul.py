"""PyTorch twin of bench/bench_matmul.c: the same matmul and attention cases,
fwd and bwd, f32 and bf16, one JSON line each (keys match for the join)."""
import json

import torch
import torch.nn.functional as F
from torch_benchlib import median_ms, timed

torch.set_num_threads(2)


def attention(q, k, v):
    # the reshapes a model with [B, N, C] activations needs around SDPA (one head)
    B, Nq, C = q.shape
    Nk = k.shape[1]
    o = F.scaled_dot_product_attention(q.view(B, Nq, 1, C).transpose(1, 2), k.view(B, Nk, 1, C).transpose(1, 2),
                                       v.view(B, Nk, 1, C).transpose(1, 2))
    return o.transpose(1, 2).reshape(B, Nq, C)


def emit(op, shape, dname, bwd, ms, flops):
    print(json.dumps({"op": op, "shape": shape, "dtype": dname, "pass": "bwd" if bwd else "fwd",
                      "torch_ms": round(ms, 3), "gflops": round(flops / (ms * 1e-3) * 1e-9, 1)}), flush=True)


for dname, dt in (("f32", torch.float32), ("bf16", torch.bfloat16)):
    g = torch.Generator().manual_seed(2)
    M, K, N = 4096, 1024, 1024
    a = torch.randn(M, K, generator=g).to(dt).requires_grad_()
    b = (torch.randn(K, N, generator=g) * 0.03).to(dt).requires_grad_()
    gout = torch.randn(M, N, generator=g).to(dt)
    for bwd in (False, True):
        ms = median_ms(timed([a, b], torch.matmul, gout, bwd))
        emit("matmul", f"{M}x{K}x{N}", dname, bwd, ms, 2.0 * M * N * K * (2 if bwd else 1))
    B, Nq, Nk, C = 2, 16384, 256, 32
    q, k, v = (torch.randn(B, n, C, generator=g).to(dt).requires_grad_() for n in (Nq, Nk, Nk))
    gout = torch.randn(B, Nq, C, generator=g).to(dt)
    for bwd in (False, True):
        ms = median_ms(timed([q, k, v], attention, gout, bwd))
        emit("attention", f"{B}x{Nq}x{Nk}x{C}", dname, bwd, ms, 4.0 * B * Nq * Nk * C * (2 if bwd else 1))
