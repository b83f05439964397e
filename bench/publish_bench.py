"""Side-by-side: Parquet -> RabbitMQ with publisher confirms against the
broker's own ceiling (`pretext bench publish`: the producer end to end, then
pre-built payloads of the same size and count through the same confirm
window; best of 3 rounds each), and the peak memory of the lean producer
binary `pretext-produce` on the same file while `pretext bench drain`
consumes, so inputs larger than the queue bound pass through.

Usage: publish_bench.py BIN_DIR FILE [--skip-ratio]
"""
import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")


def peak_memory(bin_dir, path):
    """Runs pretext-produce on `path` with a drainer; returns (seconds, peak RSS MB, summary)."""
    ns = f"bench-mem-{os.getpid()}-{int(time.time())}"
    drainer = subprocess.Popen([os.path.join(bin_dir, "pretext"), "bench", "drain", "--broker", URL,
                                "--ns", ns], stdout=subprocess.PIPE, text=True)
    try:
        assert drainer.stdout.readline().startswith("draining"), "the drainer did not start"
        with tempfile.TemporaryDirectory() as run_dir, \
                tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            t0 = time.perf_counter()
            p = subprocess.Popen([os.path.join(bin_dir, "pretext-produce"), "--data", path,
                                  "--broker", URL, "--ns", ns, "--run-dir", run_dir],
                                 stdout=out, stderr=err)
            # wait4: this child's own peak, not the largest of all children.
            _, status, usage = os.wait4(p.pid, 0)
            dt = time.perf_counter() - t0
            out.seek(0)
            err.seek(0)
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"pretext-produce failed:\n{err.read()[-4000:]}")
            line = out.read().strip().splitlines()[-1]
        return dt, usage.ru_maxrss / 1024.0, line
    finally:
        drainer.send_signal(signal.SIGTERM)
        drainer.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin_dir")
    ap.add_argument("file")
    ap.add_argument("--skip-ratio", action="store_true")
    a = ap.parse_args()
    doc = {"file": a.file, "file_bytes": os.path.getsize(a.file)}
    if not a.skip_ratio:
        r = json.loads(subprocess.run([os.path.join(a.bin_dir, "pretext"), "bench", "publish",
                                       "--broker", URL, "--data", a.file],
                                      check=True, capture_output=True, text=True).stdout)
        doc["publish"] = r
        print(f"Parquet -> RabbitMQ, {r['tokens']/1e6:.1f}M tokens, {r['megabytes']:.0f} MB of batches, "
              f"best of {r['rounds']}:")
        print("| path | seconds | MB/s | tokens/s |")
        print("|---|---|---|---|")
        print(f"| producer | {r['produce_seconds']:.3f} | {r['produce_mb_per_s']:.0f} | "
              f"{r['produce_tokens_per_s']/1e6:.1f}M |")
        print(f"| ceiling (pre-built payloads) | {r['ceiling_seconds']:.3f} | {r['ceiling_mb_per_s']:.0f} | |")
        print(f"| producer alone (in-process transport) | {r['alone_seconds']:.3f} | {r['alone_mb_per_s']:.0f} | "
              f"{r['alone_tokens_per_s']/1e6:.1f}M |")
        print(f"share of the ceiling: {r['fraction_of_ceiling']:.1%}")
    dt, rss, line = peak_memory(a.bin_dir, a.file)
    doc["memory"] = {"seconds": dt, "peak_rss_mb": rss, "summary": line}
    print(f"pretext-produce with a drainer: {dt:.1f} s, peak RSS {rss:.0f} MB ({line})")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "publish.json"), "w") as f:
        json.dump(doc, f, indent=2)


if __name__ == "__main__":
    main()
