"""Timing protocol shared by the PyTorch twins of the op benchmarks (same as bench/bench_common.h):
2 warm-up runs, then runs until >= 0.3 s and >= 3 runs; the median in ms."""
import time


def median_ms(run):
    """run() performs one measured pass and returns its duration in seconds."""
    run()
    run()
    ts = []
    while sum(ts) < 0.3 or len(ts) < 3:
        ts.append(run())
    ts.sort()
    return ts[len(ts) // 2] * 1e3


def timed(ins, fwd, gout, bwd):
    """One run of fwd(*ins) (and of its backward when bwd); only the measured pass is timed."""
    def run():
        for t in ins:
            t.grad = None
        t0 = time.perf_counter()
        y = fwd(*ins)
        t1 = time.perf_counter()
        if not bwd:
            return t1 - t0
        t0 = time.perf_counter()
        y.backward(gout)
        return time.perf_counter() - t0
    return run


# ---- model benchmarks (the twins of bench/bench_{train,unet2d,segmenter,deeplab}.c) ----

def peak_rss_mib():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def mean_s(run, reps):
    """run() once untimed (warm-up), then reps timed runs; their mean in seconds."""
    run()
    t = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        t += time.perf_counter() - t0
    return t / reps


def train_row(name, step, reps, h, w, batch, dts, threads, config):
    """JSON row of reps training steps (step() runs one: forward, loss, backward, optimizer)."""
    m = mean_s(step, reps)
    return {"model": name, "mode": "train", "shape": f"{h}x{w}", "batch": batch, "dtype": dts, "threads": threads,
            "torch_step_s": round(m, 4), "torch_img_s": round(batch / m, 3),
            "torch_peak_rss_mib": round(peak_rss_mib()), "torch_config": config}


def infer_row(name, model, x, reps, h, w, dts, threads, config):
    """JSON row of batch-1 inference under inference_mode (autocast to bf16 when dts is bf16)."""
    import torch
    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dts == "bf16"):
        m = mean_s(lambda: model(x), reps)
    return {"model": name, "mode": "infer", "shape": f"{h}x{w}", "batch": 1, "dtype": dts, "threads": threads,
            "torch_ms": round(1e3 * m, 1), "torch_peak_rss_mib": round(peak_rss_mib()), "torch_config": config}


def add_ort(row, model, x, reps, threads, path):
    """ONNX Runtime's batch-1 time beside PyTorch's in row (ort_ms), or ort_error: ORT is optional."""
    import torch
    try:
        import onnxruntime as ort
        torch.onnx.export(model, x, path, opset_version=17, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.numpy()}
        row["ort_ms"] = round(1e3 * mean_s(lambda: sess.run(None, feed), reps), 1)
        row["ort_version"] = ort.__version__
    except Exception as e:
        row["ort_error"] = str(e)[:200]
    return row
