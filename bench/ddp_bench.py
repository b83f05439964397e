"""Side-by-side: pretraining as a user runs it, end to end, pretext against
PyTorch DDP, in one invocation, on the same Parquet file, model, token
budget, bucket edges and masking rate, 1 libtorch thread per rank:

- pretext: `pretext produce` publishes every batch to RabbitMQ first (its
  own time is reported apart), then `pretext train` (1 rank) or `pretext
  launch --nproc 2 -- train` (2 ranks, Gloo) consumes, steps, checkpoints
  and acks until the data ends; `pretext audit` must find every batch
  applied exactly once.
- PyTorch: bench/ddp_reference.py, a loader over the file that buckets and
  masks, and DDP over Gloo with 1 and 2 processes, on the model pretext
  trained (its checkpoint's config).

Real tokens/s = real (unpadded) tokens trained / wall seconds of the
training part (pretext: the trainer processes, start-up included;
PyTorch: from the barrier after DDP set-up to the last step, file read
included). Both sides must train on the same number of real tokens.

Usage: ddp_bench.py BIN_DIR FILE [--width 64] [--depth 4] [--max-tokens 16384]
       [--epochs 1] [--checkpoint-every 20] [--repeat 1]
       [--broker amqp://guest:guest@127.0.0.1:5672/%2f]
Writes bench/out/ddp.json (medians over repetitions, and each
repetition's ratios and runs) and prints a table.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} ... failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done


def manifest_tokens(run_dir):
    total = 0
    for path in glob.glob(os.path.join(run_dir, "manifests", "*.jsonl")):
        with open(path) as f:
            for line in f:
                try:
                    total += json.loads(line)["tokens"]
                except (ValueError, KeyError):
                    pass
    return total


PHASES = ("agree", "backward", "sync", "allreduce", "apply")


def profile(run_dir, ranks):
    """Each rank's seconds by phase, summed over its steps, from its metrics
    file: waiting for data, the round's phases (data parallel), and the
    rest (decode, bookkeeping, the blocking pool)."""
    out = []
    for r in range(ranks):
        name = "metrics.jsonl" if r == 0 else f"metrics.rank{r}.jsonl"
        steps = [json.loads(l) for l in open(os.path.join(run_dir, name))]
        row = {"rank": r, "steps": len(steps), "step_secs": sum(s["step_secs"] for s in steps),
               "wait": sum(s["step_secs"] * s["data_wait_fraction"] for s in steps),
               "real_tokens": sum(s["real_tokens"] for s in steps)}
        for ph in PHASES:
            row[ph] = sum(s.get("phases", {}).get(ph, 0.0) for s in steps)
        row["other"] = row["step_secs"] - row["wait"] - sum(row[ph] for ph in PHASES)
        out.append(row)
    return out


def delete_namespace(ns):
    for q in ("pretrain", "finetune", "files", "control", "dead"):
        subprocess.run(["rabbitmqctl", "delete_queue", f"{ns}.{q}"], capture_output=True)


def pretext(a, ranks, work):
    ns = f"ddpbench-{os.getpid()}-{ranks}"
    run_dir = os.path.join(work, f"pretext-{ranks}")
    exe = os.path.join(a.bin_dir, "pretext")
    common = ["--broker", a.broker, "--ns", ns, "--run-dir", run_dir, "--task", "masked"]
    delete_namespace(ns)
    try:
        t0 = time.perf_counter()
        run([exe, "produce", "--data", a.file, *common, "--epochs", str(a.epochs), "--max-tokens",
             str(a.max_tokens), "--mask-span", "1", "--horizon", "1", "--splits", "train,valid,test", "--producer-id", "bench"])
        produce_secs = time.perf_counter() - t0
        train = ["train", *common, "--width", str(a.width), "--depth", str(a.depth), "--threads", "1",
                 "--device", "cpu", "--checkpoint-every", str(a.checkpoint_every), "--seed", "0"]
        cmd = [exe, *train] if ranks == 1 else [exe, "launch", "--nproc", str(ranks), "--", *train]
        t0 = time.perf_counter()
        out = run(cmd, env={**os.environ, "PRETEXT_LOG": "warn"}).stdout
        wall = time.perf_counter() - t0
        # "rank r/w (all-reduce S s): ... applied N batches" per rank.
        per_rank = [line for line in out.splitlines() if "applied" in line]
    finally:
        delete_namespace(ns)
    audit = json.loads(run([exe, "audit", "--json", run_dir]).stdout)
    assert audit["missing"] == 0 and audit["applied_twice"] == 0 and audit["published"] > 0, audit
    steps = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    ckpt = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step-*")))[-1]
    with open(os.path.join(ckpt, "state.json")) as f:
        model = json.load(f)["model"]
    tokens = manifest_tokens(run_dir)
    return {
        "ranks": ranks, "real_tokens": tokens, "batches": audit["applied"], "wall_secs": wall,
        "produce_secs": produce_secs, "steps_rank0": len(steps),
        "step_secs_rank0": sum(s["step_secs"] for s in steps), "tokens_per_s": tokens / wall,
        "ranks_said": per_rank, "profile": profile(run_dir, ranks),
    }, model


def pytorch(a, ranks, model):
    out = run([sys.executable, os.path.join(HERE, "ddp_reference.py"), a.file, str(ranks), json.dumps(model),
               str(a.max_tokens), str(a.epochs), "1"]).stdout
    return json.loads(out.strip().splitlines()[-1])


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin_dir")
    ap.add_argument("file")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=16384)
    ap.add_argument("--epochs", type=int, default=1)
    # A rank holds up to checkpoint-every + 16 deliveries (its prefetch): on
    # a run of a few hundred batches the default 100 leaves one rank with
    # the last ~40 batches alone (docs/benchmarks.md).
    ap.add_argument("--checkpoint-every", type=int, default=20)
    # Runs of either side move by ~10% from minute to minute on a shared
    # 2-core machine: each repetition runs pretext and PyTorch back to back
    # at each rank count, and the ratios reported are the medians of those
    # pairs' ratios.
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    a = ap.parse_args()
    a.file = os.path.abspath(a.file)
    doc = {"settings": {k: v for k, v in vars(a).items()}}
    reps = []
    with tempfile.TemporaryDirectory() as work:
        for rep in range(a.repeat):
            runs = {}
            rep_dir = os.path.join(work, f"rep{rep}")
            os.makedirs(rep_dir)
            for r in (1, 2):
                runs[f"pretext_{r}"], model = pretext(a, r, rep_dir)
                runs[f"pytorch_{r}"] = pytorch(a, r, model)
                p, t = runs[f"pretext_{r}"], runs[f"pytorch_{r}"]
                assert p["real_tokens"] == t["real_tokens"], (p["real_tokens"], t["real_tokens"])
                print(f"repetition {rep + 1}/{a.repeat}, {r} rank(s): pretext {p['tokens_per_s']:,.0f}, "
                      f"PyTorch {t['tokens_per_s']:,.0f} real tokens/s", file=sys.stderr)
            reps.append(runs)
    doc["settings"]["model"] = model
    keys = ("pretext_1", "pretext_2", "pytorch_1", "pytorch_2")
    for k in keys:
        doc[k] = median([rep[k]["tokens_per_s"] for rep in reps])
    for r in (1, 2):
        doc[f"ratios_{r}"] = [rep[f"pretext_{r}"]["tokens_per_s"] / rep[f"pytorch_{r}"]["tokens_per_s"]
                              for rep in reps]
        doc[f"ratio_{r}"] = median(doc[f"ratios_{r}"])
    doc["runs"] = reps
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "ddp.json"), "w") as f:
        json.dump(doc, f, indent=2)
    p1 = reps[0]["pretext_1"]
    print(f"pretraining end to end, width {a.width} depth {a.depth}, budget {a.max_tokens} tokens, "
          f"{a.epochs} epoch(s), {p1['real_tokens']:,} real tokens, 1 thread per rank, "
          f"{a.repeat} repetition(s), medians:")
    print("| ranks | pretext (broker) tokens/s | PyTorch DDP tokens/s | pretext / PyTorch | each repetition |")
    print("|---|---|---|---|---|")
    for r in (1, 2):
        each = ", ".join(f"{x:.2f}" for x in doc[f"ratios_{r}"])
        print(f"| {r} | {doc[f'pretext_{r}']:,.0f} | {doc[f'pytorch_{r}']:,.0f} | {doc[f'ratio_{r}']:.2f} | {each} |")
    print("where pretext's time went, seconds summed over each rank's steps:")
    cols = ("step_secs", "wait", *PHASES, "other")
    print("| run | rank | steps | real tokens | " + " | ".join(cols) + " |")
    print("|---|---|---|---|" + "---|" * len(cols))
    for i, rep in enumerate(reps):
        for key in ("pretext_1", "pretext_2"):
            for row in rep[key]["profile"]:
                print(f"| {key} #{i + 1} | {row['rank']} | {row['steps']} | {row['real_tokens']:,} | "
                      + " | ".join(f"{row[c]:.1f}" for c in cols) + " |")
    print(f"scaling 1 -> 2 ranks: pretext {doc['pretext_2'] / doc['pretext_1']:.2f}x, "
          f"PyTorch {doc['pytorch_2'] / doc['pytorch_1']:.2f}x; "
          f"publishing took {p1['produce_secs']:.1f} s (not in the pretext figures)")


if __name__ == "__main__":
    main()
