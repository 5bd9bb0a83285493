"""PyTorch twin of bench/bench_unet2d.c: MONAI DynUNet with nnU-Net's 2-D defaults (filters 32, 64, 128,
256, 512, 512; instance norm; LeakyReLU 0.01; deep supervision with 2 heads), 4 input channels, 4 outputs.
Training step: forward, nnU-Net Dice+CE (batch Dice over foreground classes, smooth 1e-5, ignore 255) on
the main and both deep-supervision maps (weights 1, 1/2, 1/4 normalised), backward, SGD (lr 0.01,
momentum 0.99, nesterov, weight decay 3e-5). bf16 via torch.autocast("cpu").
usage: torch_unet2d.py train H W BATCH f32|bf16 [steps] | infer H W f32|bf16 [reps]
Prints one JSON line (the keys of bench/torch_train.py). Threads: torch.set_num_threads(OMP_NUM_THREADS,
default 2)."""
import json
import os
import sys

import torch
import torch.nn.functional as F
from monai.networks.nets import DynUNet
from torch_benchlib import infer_row, train_row

FILTERS = [32, 64, 128, 256, 512, 512]
IN_CH, CLASSES = 4, 4


def make():
    d = len(FILTERS)
    return DynUNet(spatial_dims=2, in_channels=IN_CH, out_channels=CLASSES, kernel_size=[3] * d,
                   strides=[1] + [2] * (d - 1), upsample_kernel_size=[2] * (d - 1), filters=FILTERS,
                   norm_name=("INSTANCE", {"affine": True}), deep_supervision=True, deep_supr_num=2, res_block=False)


def dice_ce(logits, labels):
    """nnU-Net DC_and_CE_loss (ignore 255, batch_dice, do_bg=False, smooth 1e-5); tests/fixtures/gen_unet2d.py."""
    logits = logits.float()
    mask = labels != 255
    m = mask[:, None].float()
    y = F.one_hot(torch.where(mask, labels, 0), logits.shape[1]).permute(0, 3, 1, 2).float()
    p = torch.softmax(logits, 1)
    axes = (0, 2, 3)
    inter, pred, gt = (p * y * m).sum(axes), (p * m).sum(axes), (y * m).sum(axes)
    dc = (2 * inter + 1e-5) / torch.clip(gt + pred + 1e-5, 1e-8)
    return F.cross_entropy(logits, labels, ignore_index=255) - dc[1:].mean()


def main():
    a = sys.argv[1:]
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    train = a[0] == "train"
    h, w = int(a[1]), int(a[2])
    b = int(a[3]) if train else 1
    dts = a[4] if train else a[3]
    reps = int(a[5 if train else 4]) if len(a) > (5 if train else 4) else (3 if train else 5)
    dt = torch.bfloat16 if dts == "bf16" else torch.float32
    model = make()
    x = torch.randn(b, IN_CH, h, w)
    config = f"torch {torch.__version__}, set_num_threads({threads}), OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
        y = torch.randint(0, CLASSES, (b, h, w))
        y[torch.rand(b, h, w) < 0.01] = 255
        wts = [1.0, 0.5, 0.25]
        wts = [v / sum(wts) for v in wts]

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt == torch.bfloat16):
                maps = model(x).unbind(1)
                loss = sum(wi * dice_ce(mp, y) for wi, mp in zip(wts, maps))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        print(json.dumps(train_row("unet2d", step, reps, h, w, b, dts, threads, config)))
        return
    print(json.dumps(infer_row("unet2d", model, x, reps, h, w, dts, threads, config)))

if __name__ == "__main__":
    main()
