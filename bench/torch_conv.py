"""PyTorch twin of bench/bench_conv.c: dense 3x3 and depthwise 3x3 convolution
(pad 1, with bias), fwd and bwd (gradients for input, weight and bias), f32
and bf16; one JSON line per case (keys match bench_conv for the join)."""
import json

import torch
import torch.nn.functional as F
from torch_benchlib import median_ms, timed

torch.set_num_threads(2)


CASES = [
    ("conv3x3", "8x64x128x128->64", (8, 64, 128, 128), 64, 1),
    ("dwconv3x3", "2x256x64x64", (2, 256, 64, 64), 256, 256),
]

for op, shape, xs, oc, groups in CASES:
    for dname, dt in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        x = torch.randn(*xs).to(dt).requires_grad_()
        w = (0.1 * torch.randn(oc, xs[1] // groups, 3, 3)).to(dt).requires_grad_()
        b = (0.1 * torch.randn(oc)).to(dt).requires_grad_()
        gout = torch.randn(xs[0], oc, xs[2], xs[3]).to(dt)
        for pas in ("fwd", "bwd"):
            with torch.set_grad_enabled(pas == "bwd"):
                conv = lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=groups)
                ms = median_ms(timed([x, w, b], conv, gout, pas == "bwd"))
            print(json.dumps({"op": op, "shape": shape, "dtype": dname, "pass": pas, "torch_ms": round(ms, 3)}),
                  flush=True)
