"""PyTorch twin of bench/bench_shape.c: x4 bilinear upsample and NCHW->NHWC
permute, fwd and bwd, f32 and bf16, one JSON line each (keys match for the join)."""
import json

import torch
import torch.nn.functional as F
from torch_benchlib import median_ms, timed

torch.set_num_threads(2)


CASES = [
    ("bilinear_up4", (2, 256, 128, 128),
     lambda x: F.interpolate(x, size=(x.shape[2] * 4, x.shape[3] * 4), mode="bilinear", align_corners=False)),
    ("permute_nchw_nhwc", (2, 64, 128, 128), lambda x: x.permute(0, 2, 3, 1).contiguous()),
]

for op, shape, fwd in CASES:
    for dname, dt in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(*shape, generator=g).to(dt).requires_grad_()
        with torch.no_grad():
            gout = torch.randn(fwd(x).shape, generator=g).to(dt)
        for bwd in (False, True):
            ms = median_ms(timed([x], fwd, gout, bwd))
            print(json.dumps({"op": op, "shape": "x".join(map(str, shape)), "dtype": dname,
                              "pass": "bwd" if bwd else "fwd", "torch_ms": round(ms, 3)}), flush=True)
        del x, gout
