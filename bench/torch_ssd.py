"""PyTorch twin of bench/bench_ssd.c: MLPerf's SSD300 on torchvision's resnet34 (layers 1-3, layer 3
at stride 1; tests/fixtures/gen_ssd.py), 80 classes + background. Training step: forward, MLPerf's
encoder (matching) and loss, backward, SGD (lr 2.5e-3, momentum 0.9, wd 5e-4). Inference: batch 1
forward + softmax, decode, score > 0.05, top 200 per class, torchvision.ops.batched_nms(0.5), 200 per
image (torch_detect_ms: that post-processing alone).
usage: torch_ssd.py train BATCH f32|bf16 [steps] | infer f32|bf16 [reps]"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from gen_ssd import SSD, TvTrunk, default_boxes, encode, loc_vec, mlperf_loss, postprocess  # noqa: E402
from torch_benchlib import mean_s, peak_rss_mib, train_row  # noqa: E402

BOXES = [[30, 40, 120, 200], [150, 20, 290, 140], [10, 10, 60, 50], [200, 180, 280, 290], [5, 100, 295, 260],
         [120, 130, 140, 150]]


def main():
    a = sys.argv[1:]
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    train = a[0] == "train"
    b = int(a[1]) if train else 1
    dts = a[2] if train else a[1]
    reps = int(a[3 if train else 2]) if len(a) > (3 if train else 2) else (3 if train else 5)
    dt = torch.bfloat16 if dts == "bf16" else torch.float32
    K = 80
    model = SSD(TvTrunk(), 256, [512, 512, 256, 256, 256], [256, 256, 128, 128, 128], K + 1)
    xywh, ltrb = default_boxes()
    x = torch.randn(b, 3, 300, 300)
    config = (f"torch {torch.__version__}, set_num_threads({threads}), "
              f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=2.5e-3, momentum=0.9, weight_decay=5e-4)
        labels = [[(i * 7 + k * 13) % K for k in range(6)] for i in range(b)]

        def step():
            gl, gx = [], []
            for i in range(b):   # the crowd box (index 2) takes part in no matching
                keep = [k for k in range(6) if k != 2]
                bt = torch.tensor([BOXES[k] for k in keep], dtype=torch.float32) / 300.0
                lt = torch.tensor([labels[i][k] + 1 for k in keep])
                bo, lo = encode(ltrb, bt, lt)
                gl.append(lo), gx.append(bo)
            vec = loc_vec(xywh, torch.stack(gx).transpose(1, 2).contiguous())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt == torch.bfloat16):
                ploc, plabel = model(x)
            loss, _ = mlperf_loss(ploc.float(), plabel.float(), vec, torch.stack(gl))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        print(json.dumps(train_row("ssd300_r34", step, reps, 300, 300, b, dts, threads, config)))
        return
    model.eval()
    det_t = []

    def infer():
        ploc, plabel = model(x)
        t0 = time.perf_counter()
        postprocess(xywh, plabel.float(), ploc.float(), [(480, 640)], check_margin=False)
        det_t.append(time.perf_counter() - t0)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt == torch.bfloat16):
        m = mean_s(infer, reps)
    print(json.dumps({"model": "ssd300_r34", "mode": "infer", "shape": "300x300", "batch": 1, "dtype": dts,
                      "threads": threads, "torch_ms": round(1e3 * m, 1),
                      "torch_detect_ms": round(1e3 * sum(det_t[1:]) / max(1, len(det_t) - 1), 2),
                      "torch_peak_rss_mib": round(peak_rss_mib()), "torch_config": config}))


if __name__ == "__main__":
    main()
