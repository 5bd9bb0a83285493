"""PyTorch twin of bench/bench_data.c: the same mmseg train pipelines with
PIL decoding, torchvision tensor transforms and a torch DataLoader with the
same worker count. Prints one JSON line per case:
  {"pipeline": ..., "threads": N, "torch_samples_per_s": X}
Data root: $SEGC_DATA_ROOT (default ../shared/data, relative to the repo).
"""
import json
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import _functional_tensor as TFT

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def rescale_size(h, w, scale_w, scale_h):
    long_edge, short_edge = max(scale_w, scale_h), min(scale_w, scale_h)
    f = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def convert(img, alpha=1.0, beta=0.0):
    return (img.float() * alpha + beta).clamp_(0, 255).to(torch.uint8)


class SegTrain(torch.utils.data.Dataset):
    """LoadImage, LoadAnnotations, RandomResize, RandomCrop(cat_max_ratio),
    RandomFlip, PhotoMetricDistortion, Normalize, Pad (mmseg semantics)."""

    def __init__(self, pairs, label_map, scale, ratio, crop, cat_max_ratio=0.75, length=None):
        self.pairs, self.label_map = pairs, label_map
        self.scale, self.ratio, self.crop, self.cat_max_ratio = scale, ratio, crop, cat_max_ratio
        self.length = length or len(pairs)

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        ip, lp = self.pairs[i % len(self.pairs)]
        img = torch.from_numpy(np.array(Image.open(ip).convert("RGB"))).permute(2, 0, 1)
        lab = torch.from_numpy(self.label_map[np.asarray(Image.open(lp))])[None]
        # RandomResize (mmcv: scale * ratio, keep-ratio rescale)
        r = random.uniform(*self.ratio)
        nh, nw = rescale_size(img.shape[1], img.shape[2], int(self.scale[0] * r), int(self.scale[1] * r))
        img = TF.resize(img, [nh, nw], interpolation=InterpolationMode.BILINEAR, antialias=False)
        lab = TF.resize(lab, [nh, nw], interpolation=InterpolationMode.NEAREST)
        # RandomCrop with up to 10 retries on the class ratio
        ch, cw = self.crop

        def draw():
            return random.randint(0, max(nh - ch, 0)), random.randint(0, max(nw - cw, 0))

        y, x = draw()
        for _ in range(10):
            vals, cnt = torch.unique(lab[0, y:y + ch, x:x + cw], return_counts=True)
            cnt = cnt[vals != 255]
            if len(cnt) > 1 and cnt.max().item() / cnt.sum().item() < self.cat_max_ratio:
                break
            y, x = draw()
        img, lab = img[:, y:y + ch, x:x + cw], lab[:, y:y + ch, x:x + cw]
        # RandomFlip
        if random.random() < 0.5:
            img, lab = TF.horizontal_flip(img), TF.horizontal_flip(lab)
        # PhotoMetricDistortion
        if random.randint(0, 1):
            img = convert(img, beta=random.uniform(-32, 32))
        mode = random.randint(0, 1)
        if mode == 1 and random.randint(0, 1):
            img = convert(img, alpha=random.uniform(0.5, 1.5))
        if random.randint(0, 1):
            hsv = TFT._rgb2hsv(img.float() / 255)
            hsv[1] = (hsv[1] * random.uniform(0.5, 1.5)).clamp_(0, 1)
            img = (TFT._hsv2rgb(hsv) * 255).to(torch.uint8)
        if random.randint(0, 1):
            img = TF.adjust_hue(img, random.randint(-18, 17) / 180)
        if mode == 0 and random.randint(0, 1):
            img = convert(img, alpha=random.uniform(0.5, 1.5))
        # Normalize + Pad
        img = (img.float() - MEAN) / STD
        h, w = img.shape[1:]
        img = F.pad(img, (0, cw - w, 0, ch - h), value=0)
        lab = F.pad(lab, (0, cw - w, 0, ch - h), value=255)
        return img, lab[0].long()


def measure(ds, threads, batch=4, min_s=2.0):
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=threads, persistent_workers=True,
                                     prefetch_factor=2)
    it = iter(dl)
    for _ in range(2):
        next(it)
    t0 = t = time.perf_counter()
    samples = batches = 0
    while t - t0 < min_s or batches < 4:
        try:
            imgs, _ = next(it)
        except StopIteration:
            it = iter(dl)
            continue
        samples += imgs.shape[0]
        batches += 1
        t = time.perf_counter()
    del it, dl
    return samples / (t - t0)


def main():
    torch.set_num_threads(2)
    root = os.environ.get("SEGC_DATA_ROOT", "../shared/data")
    min_s = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    cam = os.path.join(root, "camvid")
    if os.path.isdir(cam):
        names = sorted(f for f in os.listdir(os.path.join(cam, "train")) if f.endswith(".png"))
        pairs = [(os.path.join(cam, "train", n), os.path.join(cam, "trainannot", n)) for n in names]
        lmap = np.full(256, 255, np.uint8)
        lmap[:11] = np.arange(11)
        ds = SegTrain(pairs, lmap, (480, 360), (0.5, 2.0), (360, 480))
        for th in (1, 2):
            r = measure(ds, th, min_s=min_s)
            print(json.dumps({"pipeline": "camvid_png_crop360x480", "threads": th, "torch_samples_per_s": round(r, 2)}),
                  flush=True)
    ade = os.path.join(root, "ade20k-samples", "ADEChallengeData2016")
    if os.path.isdir(ade):
        idir, adir = os.path.join(ade, "images", "validation"), os.path.join(ade, "annotations", "validation")
        names = sorted(f[:-4] for f in os.listdir(idir) if f.endswith(".jpg"))
        pairs = [(os.path.join(idir, n + ".jpg"), os.path.join(adir, n + ".png")) for n in names]
        lmap = np.full(256, 255, np.uint8)   # reduce_zero_label: 0 -> 255, k -> k - 1
        lmap[1:151] = np.arange(150)
        ds = SegTrain(pairs, lmap, (2048, 512), (0.5, 2.0), (512, 512), length=256)
        for th in (1, 2):
            r = measure(ds, th, min_s=min_s)
            print(json.dumps({"pipeline": "ade20k_jpg_crop512x512", "threads": th, "torch_samples_per_s": round(r, 2)}),
                  flush=True)


if __name__ == "__main__":
    main()
