"""pyarrow + numpy reference for `pretext validate`: the same checks, the
same streaming (64 rows per batch), the same narrowing to uint8.

Prints one JSON object: rows, valid, valid_tokens, rejected by reason.
"""
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

MIN_LEN, MAX_LEN, MAX_VALUE = 512, 30720, 40


def validate(paths):
    seen = set()
    out = {"rows": 0, "valid": 0, "valid_tokens": 0, "rejected": {}}
    rej = out["rejected"]

    def reject(reason, n=1):
        rej[reason] = rej.get(reason, 0) + n

    for path in paths:
        f = pq.ParquetFile(path)
        for batch in f.iter_batches(batch_size=64):
            n = batch.num_rows
            out["rows"] += n
            ids = batch.column("id").cast(pa.string())
            values = batch.column("values")
            if pa.types.is_floating(values.type.value_type):
                reject("float_values", n)
                continue
            id_list = ids.to_pylist()
            reason = [None] * n
            for i, v in enumerate(id_list):
                if v is None:
                    reason[i] = "null_id"
            if "split" in batch.schema.names:
                for i, s in enumerate(batch.column("split").to_pylist()):
                    if s is not None and s not in ("train", "valid", "test") and reason[i] is None:
                        reason[i] = "invalid_split"
            lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
            offsets = values.offsets.to_numpy()
            flat = values.values.to_numpy(zero_copy_only=False)
            child_valid = values.values.is_valid().to_numpy(zero_copy_only=False) if values.values.null_count else None
            row_null = values.is_null().to_numpy(zero_copy_only=False)
            good_len = ~row_null & (lengths > 0)
            starts = offsets[:-1][good_len]
            if len(starts):
                mins = np.minimum.reduceat(flat, starts)
                maxs = np.maximum.reduceat(flat, starts)
            k = 0
            narrowed = []
            for i in range(n):
                if reason[i] is not None:
                    if good_len[i]:
                        k += 1
                    continue
                if row_null[i]:
                    reason[i] = "null_values"
                    continue
                if lengths[i] == 0:
                    reason[i] = "empty_values"
                    continue
                lo, hi = mins[k], maxs[k]
                k += 1
                a, b = offsets[i], offsets[i + 1]
                if child_valid is not None and not child_valid[a:b].all():
                    reason[i] = "null_element"
                elif not (MIN_LEN <= lengths[i] <= MAX_LEN):
                    reason[i] = "length_out_of_range"
                elif lo < 0 or hi > MAX_VALUE:
                    reason[i] = "value_out_of_range"
                else:
                    narrowed.append(flat[a:b].astype(np.uint8))
            for i, v in enumerate(id_list):
                if v is None:
                    continue
                if v in seen:
                    if reason[i] is None:
                        reason[i] = "duplicate_id"
                else:
                    seen.add(v)
            for r in reason:
                if r is None:
                    out["valid"] += 1
                else:
                    reject(r)
            out["valid_tokens"] += int(sum(len(x) for x in narrowed))
    return out


if __name__ == "__main__":
    print(json.dumps(validate(sys.argv[1:])))
