"""PyTorch twin of bench/bench_norm.c: the same cases, one JSON line each.
bwd = loss/output backward alone, after an untimed forward."""
import json

import torch
import torch.nn.functional as F
from torch_benchlib import median_ms, timed

torch.set_num_threads(2)
DT = {"f32": torch.float32, "bf16": torch.bfloat16}


def report(op, shape, dn, pas, ms):
    print(json.dumps({"op": op, "shape": shape, "dtype": dn, "pass": pas, "torch_ms": round(ms, 4)}), flush=True)


g = torch.Generator().manual_seed(7)
gout = torch.randn(16384, 64, generator=g)
for dn, dt in DT.items():
    x = torch.randn(16384, 64, generator=g).to(dt).requires_grad_()
    w = (torch.randn(64, generator=g) + 1).to(dt).requires_grad_()
    b = torch.randn(64, generator=g).to(dt).requires_grad_()
    for bwd in (False, True):
        fwd = lambda x, w, b: F.layer_norm(x, (64,), w, b, 1e-5)
        report("layer_norm", "16384x64", dn, "bwd" if bwd else "fwd",
               median_ms(timed([x, w, b], fwd, gout.to(dt), bwd)))

target = torch.randint(0, 150, (2, 512, 512), generator=g)
target[torch.rand(2, 512, 512, generator=g) < 0.05] = 255
with torch.no_grad():
    logits32 = torch.randn(2, 150, 512, 512, generator=g)
for dn, dt in DT.items():
    x = logits32.to(dt).requires_grad_()
    for bwd in (False, True):
        fwd = lambda x: F.cross_entropy(x, target, ignore_index=255)
        report("cross_entropy", "2x150x512x512", dn, "bwd" if bwd else "fwd",
               median_ms(timed([x], fwd, None, bwd)))
    del x
