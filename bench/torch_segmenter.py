"""PyTorch twin of bench/bench_segmenter.c: timm's VisionTransformer (patch 16, position embeddings for
H x W, drop-path 0.1, fused scaled_dot_product_attention: timm's fastest path) with Segmenter's mask
decoder (mmseg SegmenterMaskTransformerHead's computation, torch.nn.MultiheadAttention layers) or linear
decoder (a 1x1 conv), 150 classes. Training step: forward, CE on the logits bilinearly upsampled to the
label size (ignore 255), backward, SGD (lr 0.001, momentum 0.9). bf16 via torch.autocast("cpu").
usage: torch_segmenter.py train VARIANT DECODER H W BATCH f32|bf16 [steps]
       torch_segmenter.py infer VARIANT DECODER H W f32|bf16 [reps] [--ort]
Prints one JSON line (the keys of bench/torch_train.py). Threads: torch.set_num_threads(OMP_NUM_THREADS,
default 2)."""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch_benchlib import add_ort, infer_row, train_row

VARIANTS = {"vit-t": (192, 12, 3), "vit-s": (384, 12, 6), "vit-b": (768, 12, 12), "vit-l": (1024, 24, 16)}
K = 150


class Layer(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ffn(self.ln2(x))


class MaskHead(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.layers = nn.ModuleList([Layer(d, heads) for _ in range(2)])
        self.dec_proj = nn.Linear(d, d)
        self.cls_emb = nn.Parameter(torch.randn(1, K, d) * 0.02)
        self.patch_proj = nn.Linear(d, d, bias=False)
        self.classes_proj = nn.Linear(d, d, bias=False)
        self.decoder_norm, self.mask_norm = nn.LayerNorm(d), nn.LayerNorm(K)

    def forward(self, tok, h, w):
        b = tok.shape[0]
        x = torch.cat([self.dec_proj(tok), self.cls_emb.expand(b, -1, -1)], 1)
        for layer in self.layers:
            x = layer(x)
        x = self.decoder_norm(x)
        p = F.normalize(self.patch_proj(x[:, :-K]), dim=-1)
        c = F.normalize(self.classes_proj(x[:, -K:]), dim=-1)
        m = self.mask_norm(p @ c.transpose(1, 2))
        return m.transpose(1, 2).reshape(b, K, h, w)


class LinearHead(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.conv_seg = nn.Conv2d(d, K, 1)

    def forward(self, tok, h, w):
        return self.conv_seg(tok.transpose(1, 2).reshape(tok.shape[0], -1, h, w))


class Segmenter(nn.Module):
    def __init__(self, variant, decoder, h, w):
        super().__init__()
        d, depth, heads = VARIANTS[variant]
        self.vit = VisionTransformer(img_size=(h, w), patch_size=16, num_classes=0, global_pool="", embed_dim=d,
                                     depth=depth, num_heads=heads, drop_path_rate=0.1)
        self.head = MaskHead(d, heads) if decoder == "mask" else LinearHead(d)
        self.gh, self.gw = h // 16, w // 16

    def forward(self, x):
        tok = self.vit.forward_features(x)[:, 1:]   # final norm applied, class token dropped
        return self.head(tok, self.gh, self.gw)


def main():
    a = sys.argv[1:]
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    train = a[0] == "train"
    variant, decoder = a[1], a[2]
    h, w = int(a[3]), int(a[4])
    b = int(a[5]) if train else 1
    dts = a[6] if train else a[5]
    ri = 7 if train else 6
    reps = int(a[ri]) if len(a) > ri and not a[ri].startswith("--") else (3 if train else 5)
    dt = torch.bfloat16 if dts == "bf16" else torch.float32
    name = f"segmenter-{variant}-{decoder}"
    model = Segmenter(variant, decoder, h, w)
    x = torch.randn(b, 3, h, w)
    config = f"torch {torch.__version__}, set_num_threads({threads}), sdpa attention"
    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
        y = torch.randint(0, K, (b, h, w))
        y[torch.rand(b, h, w) < 0.01] = 255

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt == torch.bfloat16):
                logits = model(x)
                up = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
                loss = F.cross_entropy(up.float(), y, ignore_index=255)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        print(json.dumps(train_row(name, step, reps, h, w, b, dts, threads, config)))
        return
    row = infer_row(name, model, x, reps, h, w, dts, threads, config)
    if "--ort" in a and dt == torch.float32:
        add_ort(row, model, x, reps, threads, f"/tmp/segc_bench_{name}.onnx")
    print(json.dumps(row))

if __name__ == "__main__":
    main()
