"""PyTorch twin of bench/bench_elementwise.c: exact GELU, last-dim softmax and a
per-channel broadcast add, fwd and bwd, f32 and bf16; one JSON line per case
(keys match bench_elementwise for the join)."""
import json

import torch
import torch.nn.functional as F
from torch_benchlib import median_ms, timed

torch.set_num_threads(2)


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
