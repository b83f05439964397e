"""pyarrow + numpy reference for batch building: the same bucketing (edges
and token budget given), BERT masking reproducible per (seed, epoch, id),
padding, and one Arrow IPC stream per batch with FixedSizeList<u8, L>.

Usage: build_reference.py FILE EDGES_JSON MAX_TOKENS
Prints JSON: tokens, seconds, batches, bytes.
"""
import json
import sys
import time
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MASK, PAD = 41, 42


def emit(L, rows):
    n = len(rows)
    inp = np.full((n, L), PAD, np.uint8)
    tgt = np.full((n, L), PAD, np.uint8)
    lm = np.zeros((n, L), np.uint8)
    for r, (sid, v) in enumerate(rows):
        k = len(v)
        inp[r, :k] = v
        tgt[r, :k] = v
        rng = np.random.default_rng([0, 0, zlib.crc32(sid.encode())])
        m = max(1, int(round(0.15 * k)))
        sel = rng.choice(k, m, replace=False)
        lm[r, sel] = 1
        u = rng.random(m)
        inp[r, sel[u < 0.8]] = MASK
        rnd = sel[(u >= 0.8) & (u < 0.9)]
        inp[r, rnd] = rng.integers(0, 41, len(rnd))
    fsl = lambda a: pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), L)
    batch = pa.record_batch(
        [pa.array([s for s, _ in rows]), pa.array([len(v) for _, v in rows], pa.uint32()),
         fsl(inp), fsl(tgt), fsl(lm), pa.nulls(n, pa.int32())],
        names=["seq_id", "length", "input", "target", "loss_mask", "label"],
    ).replace_schema_metadata({"pretext.schema_version": "1.0", "task": "masked",
                               "bucket_len": str(L), "epoch": "0"})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().size


def main():
    path, edges, max_tokens = sys.argv[1], np.array(json.loads(sys.argv[2])), int(sys.argv[3])
    t = pq.read_table(path, columns=["id", "values"])
    ids = t.column("id").to_pylist()
    vals = t.column("values").combine_chunks()
    offs = vals.offsets.to_numpy()
    flat = vals.values.to_numpy().astype(np.uint8)
    rows = [(ids[i], flat[offs[i]:offs[i + 1]]) for i in range(len(ids))]
    tokens = int(offs[-1] - offs[0])
    t0 = time.perf_counter()
    pending, batches, nbytes = {}, 0, 0
    for sid, v in rows:
        b = int(np.searchsorted(edges, len(v)))
        lst = pending.setdefault(b, [])
        lst.append((sid, v))
        if len(lst) >= max(1, max_tokens // int(edges[b])):
            nbytes += emit(int(edges[b]), lst)
            batches += 1
            pending[b] = []
    for b, lst in pending.items():
        if lst:
            nbytes += emit(int(edges[b]), lst)
            batches += 1
    dt = time.perf_counter() - t0
    print(json.dumps({"tokens": tokens, "seconds": dt, "batches": batches, "bytes": nbytes}))


if __name__ == "__main__":
    main()
