"""Side-by-side benchmark of `pretext-validate` (the lean binary beside
PRETEXT_BIN: `pretext validate` without libtorch) against the pyarrow + numpy
reference (bench/validate_reference.py) on one file of >= 100M tokens.

Usage: bench/validate_bench.py PRETEXT_BIN [--tokens 100e6] [--repeat 3]
Writes bench/out/validate.json and prints a Markdown table.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")


def run(cmd):
    """Runs cmd, returns (seconds, peak RSS in MB, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout = p.stdout.read()
    stderr = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    if status != 0:
        sys.exit(f"{cmd} failed: {stderr.decode()}")
    return dt, ru.ru_maxrss / 1024.0, stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pretext")
    ap.add_argument("--tokens", type=float, default=100e6)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    # Mean log-uniform length on 512..30720 is about 7,370 steps.
    seqs = int(a.tokens / 7370 * 1.02) + 1
    data = os.path.join(OUT, f"validate-{seqs}")
    path = os.path.join(data, "part-00000.parquet")
    if not os.path.exists(path):
        subprocess.run([a.pretext, "gen-data", "--out", data, "--sequences", str(seqs),
                        "--rows-per-file", str(seqs), "--seed", "1"], check=True)
    results = {}
    for name, cmd in [
        ("pretext", [os.path.join(os.path.dirname(a.pretext), "pretext-validate"), "--json", path]),
        ("pyarrow+numpy", [sys.executable, os.path.join(HERE, "validate_reference.py"), path]),
    ]:
        best = None
        for _ in range(a.repeat):
            dt, rss, out = run(cmd)
            doc = json.loads(out)
            if best is None or dt < best["seconds"]:
                best = {"seconds": dt, "peak_rss_mb": rss, "valid": doc["valid"],
                        "valid_tokens": doc["valid_tokens"], "rows": doc["rows"]}
        best["tokens_per_s"] = best["valid_tokens"] / best["seconds"]
        results[name] = best
    p, r = results["pretext"], results["pyarrow+numpy"]
    assert (p["rows"], p["valid"], p["valid_tokens"]) == (r["rows"], r["valid"], r["valid_tokens"]), results
    ratio = p["tokens_per_s"] / r["tokens_per_s"]
    doc = {"file": path, "file_mb": os.path.getsize(path) / 1e6, "tokens": p["valid_tokens"],
           "results": results, "ratio": ratio, "cpus": os.cpu_count()}
    with open(os.path.join(OUT, "validate.json"), "w") as f:
        json.dump(doc, f, indent=2)
    print(f"file: {doc['file_mb']:.0f} MB Parquet, {p['valid_tokens']/1e6:.1f}M tokens, {p['rows']} rows "
          f"(best of {a.repeat})")
    print("| validator | seconds | tokens/s | peak RSS |")
    print("|---|---|---|---|")
    for name, x in results.items():
        print(f"| {name} | {x['seconds']:.2f} | {x['tokens_per_s']/1e6:.1f} M | {x['peak_rss_mb']:.0f} MB |")
    print(f"ratio pretext / reference: {ratio:.2f}x")


if __name__ == "__main__":
    main()
