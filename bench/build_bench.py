"""Side-by-side: batch building in memory (bucketing + masking + IPC
encode), `pretext bench build` against bench/build_reference.py on the same
Parquet file; also the padded fraction of the default buckets beside random
batching. Usage: build_bench.py PRETEXT_BIN FILE
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    pretext, path = sys.argv[1], sys.argv[2]
    rust = json.loads(subprocess.run([pretext, "bench", "build", "--data", path], check=True,
                                     capture_output=True, text=True).stdout)
    ref = json.loads(subprocess.run([sys.executable, os.path.join(HERE, "build_reference.py"), path,
                                     json.dumps(rust["edges"]), "65536"], check=True,
                                    capture_output=True, text=True).stdout)
    assert rust["batches"] == ref["batches"], (rust["batches"], ref["batches"])
    ratio = rust["tokens_per_s"] / (ref["tokens"] / ref["seconds"])
    doc = {"pretext": {k: rust[k] for k in ("seconds", "tokens_per_s", "batches", "bytes")},
           "reference": {**ref, "tokens_per_s": ref["tokens"] / ref["seconds"]},
           "ratio": ratio, "tokens": rust["tokens"], "buckets": rust["buckets"],
           "padded_fraction": rust["padded_fraction"],
           "random_batching_padded_fraction": rust["random_batching_padded_fraction"]}
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "build.json"), "w") as f:
        json.dump(doc, f, indent=2)
    print(f"batch building, {rust['tokens']/1e6:.1f}M tokens, {rust['batches']} batches:")
    print("| builder | seconds | tokens/s |")
    print("|---|---|---|")
    print(f"| pretext | {rust['seconds']:.2f} | {rust['tokens_per_s']/1e6:.1f} M |")
    print(f"| pyarrow+numpy | {ref['seconds']:.2f} | {doc['reference']['tokens_per_s']/1e6:.1f} M |")
    print(f"ratio pretext / reference: {ratio:.1f}x")
    print(f"padded fraction: {rust['buckets']} buckets {rust['padded_fraction']:.3%}, "
          f"random batching {rust['random_batching_padded_fraction']:.3%}")


if __name__ == "__main__":
    main()
