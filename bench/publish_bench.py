"""Side-by-side: Parquet -> RabbitMQ with publisher confirms against the
broker's own ceiling (`pretext-bench publish`: the producer end to end, then
pre-built payloads of the same size and count through the same confirm
window, rounds alternating one publisher and as many as the producer builds
tasks at once; the best
of --rounds rounds each, and the median of each round's own ratio), and the
peak memory of the lean producer
binary `pretext-produce` on the same file while `pretext-bench drain`
consumes, so inputs larger than the queue bound pass through.

With --pinned it also measures the ratio with the broker and the producer on
separate cores (the local broker's `beam.smp` pinned to CPU 0, `pretext-bench
publish` to the others, the broker's own affinity restored afterwards): on a
small machine this stands in for the broker on its own host, as deployed.

Usage: publish_bench.py BIN_DIR FILE [--rounds N] [--skip-ratio] [--pinned]
"""
import argparse
import contextlib
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
    drainer = subprocess.Popen([os.path.join(bin_dir, "pretext-bench"), "drain", "--broker", URL,
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


def publish(bin_dir, path, rounds, prefix=()):
    """One `pretext-bench publish` run (the best of `rounds` rounds each way); its JSON."""
    cmd = [*prefix, os.path.join(bin_dir, "pretext-bench"), "publish", "--broker", URL,
           "--data", path, "--repeat", str(rounds)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"pretext-bench publish failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


@contextlib.contextmanager
def broker_pinned_to(cpu):
    """Pins every thread of the local RabbitMQ (beam.smp) to `cpu`; restores
    the affinity it had on exit."""
    pids = subprocess.run(["pgrep", "-x", "beam.smp"], capture_output=True, text=True).stdout.split()
    if not pids:
        sys.exit("--pinned needs the broker on this machine: no beam.smp process found")
    saved = {pid: os.sched_getaffinity(int(pid)) for pid in pids}
    try:
        for pid in pids:
            subprocess.run(["taskset", "-a", "-cp", str(cpu), pid], check=True, capture_output=True)
        yield
    finally:
        for pid, cpus in saved.items():
            subprocess.run(["taskset", "-a", "-cp", ",".join(map(str, sorted(cpus))), pid],
                           check=True, capture_output=True)


def print_publish(r, title):
    print(f"{title}: {r['tokens']/1e6:.1f}M tokens, {r['megabytes']:.0f} MB of batches, "
          f"best of {r['rounds']}:")
    print("| path | seconds | MB/s | tokens/s |")
    print("|---|---|---|---|")
    print(f"| producer | {r['produce_seconds']:.3f} | {r['produce_mb_per_s']:.0f} | "
          f"{r['produce_tokens_per_s']/1e6:.1f}M |")
    print(f"| ceiling (pre-built payloads) | {r['ceiling_seconds']:.3f} | {r['ceiling_mb_per_s']:.0f} | |")
    print(f"| producer alone (in-process transport) | {r['alone_seconds']:.3f} | {r['alone_mb_per_s']:.0f} | "
          f"{r['alone_tokens_per_s']/1e6:.1f}M |")
    print(f"share of the ceiling: {r['fraction_of_ceiling']:.1%} (best against best); "
          f"median of the rounds' own ratios: {r['paired_fraction_median']:.1%}; "
          f"ceiling rounds alternate {' and '.join(map(str, r['ceiling_publishers']))} publishers")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin_dir")
    ap.add_argument("file")
    ap.add_argument("--skip-ratio", action="store_true")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds of producer, ceiling and producer alone; the best of each counts")
    ap.add_argument("--pinned", action="store_true",
                    help="also measure with the broker on CPU 0 and the producer on the others")
    a = ap.parse_args()
    doc = {"file": a.file, "file_bytes": os.path.getsize(a.file)}
    if not a.skip_ratio:
        doc["publish"] = publish(a.bin_dir, a.file, a.rounds)
        print_publish(doc["publish"], "Parquet -> RabbitMQ, sharing every core")
    if a.pinned:
        ncpu = os.cpu_count()
        if ncpu < 2:
            sys.exit("--pinned needs at least 2 CPUs")
        with broker_pinned_to(0):
            doc["publish_pinned"] = publish(a.bin_dir, a.file, a.rounds, ["taskset", "-c", f"1-{ncpu - 1}"])
        print_publish(doc["publish_pinned"], "Parquet -> RabbitMQ, broker on CPU 0, producer on the others")
    dt, rss, line = peak_memory(a.bin_dir, a.file)
    doc["memory"] = {"seconds": dt, "peak_rss_mb": rss, "summary": line}
    print(f"pretext-produce with a drainer: {dt:.1f} s, peak RSS {rss:.0f} MB ({line})")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "publish.json"), "w") as f:
        json.dump(doc, f, indent=2)


if __name__ == "__main__":
    main()
