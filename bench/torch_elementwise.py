"""PyTorch twin of bench/bench_elementwise.c: exact GELU, last-dim softmax and a
per-channel broadcast add, fwd and bwd, f32 and bf16; one JSON line per case
(keys match bench_elementwise for the join)."""
import json
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)


def median_ms(run):
    """2 warm-ups, then repeat until >= 0.3 s and >= 3 runs; median."""
    run()
    run()
    ts = []
    while sum(ts) < 0.3 or len(ts) < 3:
        ts.append(run())
    ts.sort()
    return ts[len(ts) // 2] * 1e3


def timed(ins, fwd, gout, bwd):
    """One run of fwd (and backward when bwd); only the measured pass is timed."""
    def run():
        for t in ins:
            t.grad = None
        t0 = time.perf_counter()
        y = fwd(*ins)
        t1 = time.perf_counter()
        if not bwd:
            return t1 - t0
        t0 = time.perf_counter()
        y.backward(gout)
        return time.perf_counter() - t0
    return run


CASES = [
    ("gelu", "2x16384x256", lambda x: F.gelu(x, approximate="none"), [(2, 16384, 256)]),
    ("softmax", "2x16384x256", lambda x: torch.softmax(x, -1), [(2, 16384, 256)]),
    ("add_broadcast", "8x64x128x128+64x1x1", torch.add, [(8, 64, 128, 128), (64, 1, 1)]),
]

for op, shape, fn, shapes in CASES:
    for dname, dt in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        ins = [torch.randn(*s).to(dt).requires_grad_() for s in shapes]
        gout = torch.randn(*shapes[0]).to(dt)
        for pas in ("fwd", "bwd"):
            with torch.set_grad_enabled(pas == "bwd"):
                ms = median_ms(timed(ins, fn, gout, pas == "bwd"))
            print(json.dumps({"op": op, "shape": shape, "dtype": dname, "pass": pas, "torch_ms": round(ms, 3)}), flush=True)
