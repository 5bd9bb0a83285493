"""PyTorch twin of bench/bench_train.c: SegFormer-B0 (the same architecture, written here so the bench needs
only torch) training step (forward, upsampled cross-entropy, backward, AdamW) and batch-1 inference.
usage: torch_train.py train H W BATCH f32|bf16 [steps] | infer H W f32|bf16 [reps] [--ort]
Prints one JSON line. Runs in PyTorch's best configuration on this machine: torch.set_num_threads(N) with
OPENBLAS_NUM_THREADS=1 (set by the runner)."""
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_benchlib import add_ort, infer_row, train_row


class Attention(nn.Module):
    def __init__(self, c, heads, sr):
        super().__init__()
        self.heads, self.sr_ratio = heads, sr
        self.query, self.key, self.value = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        if sr > 1:
            self.sr = nn.Conv2d(c, c, sr, sr)
            self.norm = nn.LayerNorm(c)
        self.proj = nn.Linear(c, c)

    def forward(self, x, h, w):
        b, n, c = x.shape
        q = self.query(x).view(b, n, self.heads, -1).transpose(1, 2)
        kv = x
        if self.sr_ratio > 1:
            kv = self.sr(x.transpose(1, 2).reshape(b, c, h, w)).reshape(b, c, -1).transpose(1, 2)
            kv = self.norm(kv)
        k = self.key(kv).view(b, -1, self.heads, c // self.heads).transpose(1, 2)
        v = self.value(kv).view(b, -1, self.heads, c // self.heads).transpose(1, 2)
        a = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
        o = (a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(o)


class Block(nn.Module):
    def __init__(self, c, heads, sr):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = Attention(c, heads, sr)
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.dw = nn.Conv2d(4 * c, 4 * c, 3, 1, 1, groups=4 * c)

    def forward(self, x, h, w):
        x = x + self.attn(self.norm1(x), h, w)
        y = self.fc1(self.norm2(x))
        b, n, c = y.shape
        y = self.dw(y.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return x + self.fc2(F.gelu(y))


class SegFormerB0(nn.Module):
    def __init__(self, classes=150, dims=(32, 64, 160, 256), heads=(1, 2, 5, 8), srs=(8, 4, 2, 1), depth=2, dec=256):
        super().__init__()
        self.patch = nn.ModuleList()
        self.pnorm, self.blocks, self.snorm = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        cin = 3
        for i, c in enumerate(dims):
            k, s = (7, 4) if i == 0 else (3, 2)
            self.patch.append(nn.Conv2d(cin, c, k, s, k // 2))
            self.pnorm.append(nn.LayerNorm(c))
            self.blocks.append(nn.ModuleList([Block(c, heads[i], srs[i]) for _ in range(depth)]))
            self.snorm.append(nn.LayerNorm(c))
            cin = c
        self.lin = nn.ModuleList([nn.Linear(c, dec) for c in dims])
        self.fuse = nn.Conv2d(4 * dec, dec, 1, bias=False)
        self.bn = nn.BatchNorm2d(dec)
        self.cls = nn.Conv2d(dec, classes, 1)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        feats = []
        for i in range(4):
            x = self.patch[i](x)
            b, c, h, w = x.shape
            t = self.pnorm[i](x.flatten(2).transpose(1, 2))
            for blk in self.blocks[i]:
                t = blk(t, h, w)
            t = self.snorm[i](t)
            x = t.transpose(1, 2).reshape(b, c, h, w)
            feats.append(x)
        size = feats[0].shape[2:]
        ups = []
        for i, f in enumerate(feats):
            b, c, h, w = f.shape
            p = self.lin[i](f.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)
            ups.append(F.interpolate(p, size=size, mode="bilinear", align_corners=False))
        y = self.fuse(torch.cat(ups[::-1], 1))
        return self.cls(self.drop(F.relu(self.bn(y))))


def main():
    a = sys.argv[1:]
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    train = a[0] == "train"
    h, w = int(a[1]), int(a[2])
    b = int(a[3]) if train else 1
    dts = a[4] if train else a[3]
    reps = int(a[5 if train else 4]) if len(a) > (5 if train else 4) and not a[5 if train else 4].startswith("--") else (3 if train else 5)
    dt = torch.bfloat16 if dts == "bf16" else torch.float32
    model = SegFormerB0()
    x = torch.randn(b, 3, h, w)
    config = f"torch {torch.__version__}, set_num_threads({threads}), OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    if train:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)
        y = torch.randint(0, 150, (b, h, w))

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt == torch.bfloat16):
                logits = model(x)
                up = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
                loss = F.cross_entropy(up.float(), y, ignore_index=255)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        print(json.dumps(train_row("segformer-b0", step, reps, h, w, b, dts, threads, config)))
        return
    row = infer_row("segformer-b0", model, x, reps, h, w, dts, threads, config)
    if "--ort" in a and dt == torch.float32:
        add_ort(row, model, x, reps, threads, "/tmp/segc_bench_segformer_b0.onnx")
    print(json.dumps(row))

if __name__ == "__main__":
    main()
