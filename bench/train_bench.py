"""Side-by-side: trainer step throughput, pretext (tch) vs PyTorch eager on
the identical model and batch, same thread count, in one invocation. The
reference first proves it computes the same logits from the same weights.
pretext runs twice: as `pretext train` does (freed memory kept for the next
step, pretext_model::memory) and with glibc's allocator defaults.
Usage: train_bench.py PRETEXT_BIN [--threads 1] [--steps 10] [--len 4096]
       [--rows 8] [--width 128] [--depth 8] [--repeat 1]
With --repeat N the three runs alternate N times (a shared 2-core machine
drifts by several percent between minutes) and the figures are medians,
the ratio the median of each repetition's own ratio.
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
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    def pretext(d, *extra):
        return json.loads(subprocess.run(
            [a.pretext, "train", "--out", d, "--steps", str(a.steps), "--threads", str(a.threads),
             "--len", str(a.len), "--rows", str(a.rows), "--width", str(a.width), "--depth", str(a.depth),
             *extra], check=True, capture_output=True, text=True).stdout)

    reps = []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(a.repeat):
            # glibc's defaults first, then what `pretext train` runs with.
            system = pretext(d, "--system-allocator")
            rust = pretext(d)
            ref = json.loads(subprocess.run(
                [sys.executable, os.path.join(HERE, "train_reference.py"), d, str(a.steps), str(a.threads)],
                check=True, capture_output=True, text=True).stdout)
            assert ref["max_abs_logit_diff"] < 1e-4, ref
            reps.append({"pretext": rust, "pretext_system_allocator": system, "pytorch": ref})
            print(f"pretext {rust['tokens_per_s']:.0f}, glibc defaults {system['tokens_per_s']:.0f}, "
                  f"PyTorch {ref['tokens_per_s']:.0f} tokens/s", file=sys.stderr)

    def med(xs):
        xs = sorted(xs)
        n = len(xs)
        return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2

    def tps(key):
        return med([r[key]["tokens_per_s"] for r in reps])

    def ratios(key):
        return [r[key]["tokens_per_s"] / r["pytorch"]["tokens_per_s"] for r in reps]

    # The last repetition's runs, with the medians as their tokens/s.
    rust, system, ref = ({**reps[-1][k], "tokens_per_s": tps(k)}
                         for k in ("pretext", "pretext_system_allocator", "pytorch"))
    ratio = med(ratios("pretext"))
    doc = {"pretext": rust, "pretext_system_allocator": system, "pytorch": ref, "ratio": ratio,
           "ratio_system_allocator": med(ratios("pretext_system_allocator")),
           "ratios": ratios("pretext"), "repetitions": reps}
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", f"train-{a.threads}t.json"), "w") as f:
        json.dump(doc, f, indent=2)
    print(f"trainer step, width {a.width} depth {a.depth}, batch {a.rows} x {a.len}, {a.threads} thread(s), {a.steps} steps, "
          f"{a.repeat} repetition(s), medians; "
          f"same logits (max diff {ref['max_abs_logit_diff']:.1e}):")
    print("| trainer | tokens/s |")
    print("|---|---|")
    print(f"| pretext (tch) | {rust['tokens_per_s']:.0f} |")
    print(f"| pretext (tch), glibc's allocator defaults | {system['tokens_per_s']:.0f} |")
    print(f"| PyTorch eager | {ref['tokens_per_s']:.0f} |")
    print(f"ratio pretext / PyTorch: {ratio:.2f} (each repetition: {', '.join(f'{x:.2f}' for x in doc['ratios'])})")


if __name__ == "__main__":
    main()
