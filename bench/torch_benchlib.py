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
