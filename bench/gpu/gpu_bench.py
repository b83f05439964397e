"""The GPU checks in one call (run through bench/gpu/run.sh, which sets
LD_LIBRARY_PATH to this python's torch/lib):

1. the `pretext` binary needs libtorch_cuda and it resolves (ldd);
2. `pretext-bench collective`: libtorch inside pretext sees CUDA, and one
   rank's data-parallel round runs on an NCCL group of one (Gloo on cpu);
3. trainer-step tokens/s of pretext (tch) against PyTorch on the identical
   model and batch (python/pretext_model.py via bench/train_reference.py,
   which first checks it computes the same logits), in full precision
   (PyTorch eager) and bf16 (pretext `--precision bf16` vs torch.autocast).

Prints one table and writes the numbers as JSON (bench/out/gpu-DEVICE.json,
and $OUT/gpu-DEVICE.json when OUT is set). Exits non-zero on any failed check.
Usage: gpu_bench.py --bin PRETEXT [--device cuda|cpu] [--dry-run]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def run_json(cmd, what):
    p = subprocess.run(cmd, capture_output=True, text=True)
    try:
        doc = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        sys.exit(f"{what}: no JSON (exit {p.returncode})\n$ {' '.join(cmd)}\n{p.stdout}\n{p.stderr[-4000:]}")
    if p.returncode != 0:
        sys.exit(f"{what}: exit {p.returncode}: {json.dumps(doc)}\n{p.stderr[-4000:]}")
    return doc


def linked_cuda(binary):
    """The libtorch_cuda / c10_cuda lines of `ldd`; fails if absent or unresolved."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    lines = [l.strip() for l in out.splitlines() if "torch_cuda" in l or "c10_cuda" in l]
    if len(lines) < 2 or any("not found" in l for l in lines):
        sys.exit(f"{binary} does not link libtorch_cuda and libc10_cuda (resolved):\n{out}")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes, a few steps: checks the script")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--len", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--width", type=int)
    ap.add_argument("--depth", type=int)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of both trainers")
    a = ap.parse_args()
    rows = a.rows or (2 if a.dry_run else 16)
    length = a.len or (256 if a.dry_run else 4096)
    steps = a.steps or (2 if a.dry_run else 30)
    width = a.width or (32 if a.dry_run else 128)
    depth = a.depth or (2 if a.dry_run else 8)

    host = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        host["card"] = torch.cuda.get_device_name(0)
        host["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    print("host:", json.dumps(host), flush=True)
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("this python's torch sees no CUDA device")

    bench_bin = os.path.join(os.path.dirname(a.bin), "pretext-bench")
    libs = linked_cuda(a.bin)
    print("pretext links:", "; ".join(libs), flush=True)

    coll = run_json([bench_bin, "collective", "--device", a.device, "--rounds", "10",
                     "--width", str(width)], "bench collective")
    print("collective:", json.dumps(coll), flush=True)
    want_backend = "Nccl" if a.device == "cuda" else "Gloo"
    if not coll["nccl_built"] or coll["round"]["backend"] != want_backend:
        sys.exit(f"expected an NCCL build and a {want_backend} group: {coll}")
    if a.device == "cuda" and not coll["cuda_available"]:
        sys.exit("pretext's libtorch sees no CUDA device")

    results = {}
    ref_script = os.path.join(ROOT, "bench", "train_reference.py")
    for precision in ("full", "bf16"):
        with tempfile.TemporaryDirectory() as d:
            rust = run_json([bench_bin, "train", "--out", d, "--device", a.device, "--precision", precision,
                             "--rows", str(rows), "--len", str(length), "--steps", str(steps),
                             "--width", str(width), "--depth", str(depth),
                             "--threads", str(a.threads)], f"pretext-bench train ({precision})")
            ref = run_json([sys.executable, ref_script, d, str(steps), str(a.threads), a.device, precision],
                           f"PyTorch reference ({precision})")
        if ref["max_abs_logit_diff"] >= 1e-4:
            sys.exit(f"the PyTorch mirror computes other logits: {ref}")
        results[precision] = {"pretext": rust, "pytorch": ref}
        print(f"{precision}: pretext {rust['tokens_per_s']:.0f} tokens/s, PyTorch {ref['tokens_per_s']:.0f} tokens/s",
              flush=True)

    doc = {"device": a.device, "dry_run": a.dry_run, "host": host, "linked": libs, "collective": coll,
           "shape": {"rows": rows, "len": length, "steps": steps, "threads": a.threads,
                     "width": width, "depth": depth},
           "train": results}
    name = f"gpu-{a.device}{'-dry' if a.dry_run else ''}.json"
    for folder in filter(None, [os.path.join(ROOT, "bench", "out"), os.environ.get("OUT")]):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "w") as f:
            json.dump(doc, f, indent=2)

    card = host.get("card", "CPU")
    eager = results["full"]["pytorch"]["tokens_per_s"]
    print()
    print(f"trainer step on {card} ({a.device}), width {width} depth {depth}, batch {rows} x {length} "
          f"(rows of decreasing length), {steps} timed steps; torch {host['torch']}; "
          f"bucketed gradient all-reduce over {coll['round']['backend']} (1 rank): "
          f"{coll['round']['allreduce_ms']:.2f} ms")
    print("| trainer | precision | tokens/s | vs PyTorch eager |")
    print("|---|---|---|---|")
    rows_out = [("pretext (tch)", "f32", results["full"]["pretext"]),
                ("PyTorch eager", "f32", results["full"]["pytorch"]),
                ("pretext (tch) `--precision bf16`", "bf16 mixed", results["bf16"]["pretext"]),
                ("PyTorch `torch.autocast(bfloat16)`", "bf16 mixed", results["bf16"]["pytorch"])]
    for who, prec, r in rows_out:
        print(f"| {who} | {prec} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / eager:.2f} |")


if __name__ == "__main__":
    main()
