"""Join segc and PyTorch benchmark JSON lines on (op, shape, dtype, pass) and print speedups.

Usage: bench_join.py SEGC.jsonl TORCH.jsonl THREADS REF_VERSIONS_JSON
Every row carries the reference's versions; a segc case without its PyTorch
twin is an error (exit 1), so a broken reference cannot pass as segc-only rows."""
import json
import sys


def read(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rows.append(json.loads(line))
    except FileNotFoundError:
        pass
    return rows


def key(r):
    return (r.get("op"), r.get("shape"), r.get("dtype"), r.get("pass"))


segc, torch_rows, threads = read(sys.argv[1]), read(sys.argv[2]), sys.argv[3]
ref = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
torch_by_key = {key(r): r for r in torch_rows if "torch_ms" in r}
config = f"torch.set_num_threads({threads}), OPENBLAS_NUM_THREADS=1, OMP_NUM_THREADS={threads}"
missing = 0
for r in segc:
    out = dict(r)
    t = torch_by_key.get(key(r))
    if t is not None and "segc_ms" in r:
        out["torch_ms"] = t["torch_ms"]
        out["speedup"] = round(t["torch_ms"] / r["segc_ms"], 3) if r["segc_ms"] > 0 else None
    elif "segc_ms" in r:
        missing += 1
        print(f"bench: no PyTorch figure for {key(r)}", file=sys.stderr)
    out.setdefault("torch_config", config)
    out.update(ref)
    print(json.dumps(out))
if not segc:
    print("bench: no segc rows", file=sys.stderr)
sys.exit(1 if missing or not segc else 0)
