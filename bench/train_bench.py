"""Side-by-side: trainer step throughput, pretext (tch) vs PyTorch eager on
the identical model and batch, same thread count, in one invocation. The
reference first proves it computes the same logits from the same weights.
Usage: train_bench.py PRETEXT_BIN [--threads 1] [--steps 10]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pretext")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--len", type=int, default=4096)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rust = json.loads(subprocess.run(
            [a.pretext, "train", "--out", d, "--steps", str(a.steps), "--threads", str(a.threads),
             "--len", str(a.len)], check=True, capture_output=True, text=True).stdout)
        ref = json.loads(subprocess.run(
            [sys.executable, os.path.join(HERE, "train_reference.py"), d, str(a.steps), str(a.threads)],
            check=True, capture_output=True, text=True).stdout)
    assert ref["max_abs_logit_diff"] < 1e-4, ref
    ratio = rust["tokens_per_s"] / ref["tokens_per_s"]
    doc = {"pretext": rust, "pytorch": ref, "ratio": ratio}
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", f"train-{a.threads}t.json"), "w") as f:
        json.dump(doc, f, indent=2)
    print(f"trainer step, width 128 depth 8, batch 8 x {a.len}, {a.threads} thread(s), {a.steps} steps; "
          f"same logits (max diff {ref['max_abs_logit_diff']:.1e}):")
    print("| trainer | tokens/s |")
    print("|---|---|")
    print(f"| pretext (tch) | {rust['tokens_per_s']:.0f} |")
    print(f"| PyTorch eager | {ref['tokens_per_s']:.0f} |")
    print(f"ratio pretext / PyTorch: {ratio:.2f}")


if __name__ == "__main__":
    main()
