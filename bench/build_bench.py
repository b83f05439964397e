"""Side-by-side: batch building in memory (bucketing + masking + IPC
encode), `pretext-bench build` against bench/build_reference.py on the same
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
    rust = json.loads(subprocess.run([pretext, "build", "--data", path], check=True,
                                     capture_output=True, text=True).stdout)
    ref = json.loads(subprocess.run([sys.executable, os.path.join(HERE, "build_reference.py"), path,
                                     json.dumps(rust["edges"]), "65536"], check=True,
                                    capture_output=True, text=True).stdout)
    assert rust["batches"] == ref["batches"], (rust["batches"], ref["batches"])
    ref_tps = ref["tokens"] / ref["seconds"]
    ratio = rust["tokens_per_s"] / ref_tps
    ratio1 = rust["tokens_per_s_1thread"] / ref_tps
    doc = {"pretext": {k: rust[k] for k in ("seconds", "tokens_per_s", "batches", "bytes", "threads",
                                            "seconds_1thread", "tokens_per_s_1thread")},
           "reference": {**ref, "tokens_per_s": ref_tps},
           "ratio": ratio, "ratio_1thread": ratio1, "tokens": rust["tokens"], "buckets": rust["buckets"],
           "padded_fraction": rust["padded_fraction"],
           "random_batching_padded_fraction": rust["random_batching_padded_fraction"]}
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "build.json"), "w") as f:
        json.dump(doc, f, indent=2)
    print(f"batch building, {rust['tokens']/1e6:.1f}M tokens, {rust['batches']} batches:")
    print("| builder | threads | seconds | tokens/s | ratio |")
    print("|---|---|---|---|---|")
    print(f"| pretext | {rust['threads']} | {rust['seconds']:.3f} | {rust['tokens_per_s']/1e6:.0f}M | {ratio:.1f}x |")
    print(f"| pretext | 1 | {rust['seconds_1thread']:.3f} | {rust['tokens_per_s_1thread']/1e6:.0f}M | {ratio1:.1f}x |")
    print(f"| pyarrow+numpy | 1 | {ref['seconds']:.3f} | {ref_tps/1e6:.0f}M | 1.0x |")
    print(f"padded fraction: {rust['buckets']} buckets {rust['padded_fraction']:.3%}, "
          f"random batching {rust['random_batching_padded_fraction']:.3%}")


if __name__ == "__main__":
    main()
