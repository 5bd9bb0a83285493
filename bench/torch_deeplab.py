"""PyTorch twin of bench/bench_deeplab.c: DeepLabV3+ R50 (mmseg ResNetV1c, output stride 16,
DepthwiseSeparableASPPHead with 512 channels, c1 48, FCN aux head 256, 150 classes) and a ResNet-50
classification trunk (torchvision layout: 7x7 stem, output stride 32, global pool, fc 1000). The
modules are the parity twin of tests/fixtures/gen_deeplab.py (mmseg's module structure in plain torch).
Training step: forward, mmseg CE (bilinear resize, mean over all pixels) + 0.4 aux CE, or CE on the
1000 classes, backward, SGD (lr 0.01, momentum 0.9, weight decay 5e-4). bf16 via torch.autocast("cpu");
channels_last=1 in the environment puts model and input in torch.channels_last.
usage: torch_deeplab.py train|trunk H W BATCH f32|bf16 [steps] | infer H W f32|bf16 [reps]
Prints one JSON line (the keys of bench/torch_unet2d.py). Threads: torch.set_num_threads(OMP_NUM_THREADS,
default 2)."""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from gen_deeplab import DeepLab, ResNet, mmseg_ce  # noqa: E402
from torch_benchlib import infer_row, train_row

R50_OS16 = dict(depth=50, stem="v1c", os=16, multi_grid=[], stem_channels=64, base_channels=64, channels=512,
                c1_channels=48, aux_channels=256, dilations=[6, 12, 18])


class Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = ResNet(50, "plain", 64, 64, [1, 2, 2, 2], [1, 1, 1, 1], fc=1000)

    def forward(self, x):
        f = self.body(x)[3]
        return self.body.fc(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1))


def main():
    a = sys.argv[1:]
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    mode = a[0]
    train = mode in ("train", "trunk")
    h, w = int(a[1]), int(a[2])
    b = int(a[3]) if train else 1
    dts = a[4] if train else a[3]
    reps = int(a[5 if train else 4]) if len(a) > (5 if train else 4) else (3 if train else 5)
    dt = torch.bfloat16 if dts == "bf16" else torch.float32
    cl = os.environ.get("channels_last", "0") == "1"
    model = Trunk() if mode == "trunk" else DeepLab(R50_OS16, 150)
    x = torch.randn(b, 3, h, w)
    if cl:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    name = "resnet50" if mode == "trunk" else "deeplabv3plus_r50_os16"
    config = (f"torch {torch.__version__}, set_num_threads({threads}), channels_last={int(cl)}, "
              f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        if mode == "trunk":
            y = torch.randint(0, 1000, (b,))
        else:
            y = torch.randint(0, 150, (b, h, w))
            y[torch.rand(b, h, w) < 0.01] = 255

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt == torch.bfloat16):
                if mode == "trunk":
                    loss = F.cross_entropy(model(x).float(), y)
                else:
                    logits, aux = model(x)
                    loss = mmseg_ce(logits.float(), y) + 0.4 * mmseg_ce(aux.float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        print(json.dumps(train_row(name, step, reps, h, w, b, dts, threads, config)))
        return
    print(json.dumps(infer_row(name, model, x, reps, h, w, dts, threads, config)))

if __name__ == "__main__":
    main()
