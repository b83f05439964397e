"""PyTorch eager reference for the trainer step: the identical model
(python/pretext_model.py) loaded from the weights `pretext bench train`
wrote, checked to give the same logits on the same batch, then timed on the
same batch shape with the same thread count (AdamW, loss on masked positions).

Usage: train_reference.py DIR STEPS THREADS  -> JSON on stdout
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import pretext_model  # noqa: E402


def main():
    out, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    model = pretext_model.load(out)
    b = pretext_model.read_safetensors(os.path.join(out, "batch.safetensors"))
    with torch.no_grad():
        logits = model(b["tokens"], b["lengths"])
    mask = (torch.arange(b["tokens"].shape[1]).unsqueeze(0) < b["lengths"].unsqueeze(1)).unsqueeze(1)
    diff = ((logits - b["logits"]).abs() * mask).max().item()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    def step():
        opt.zero_grad()
        s, n = model.loss_sum(b["tokens"], b["lengths"], b["targets"], b["loss_mask"])
        (s / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    secs = time.perf_counter() - t0
    real = int(b["lengths"].sum())
    print(json.dumps({"max_abs_logit_diff": diff, "seconds": secs, "tokens_per_s": real * steps / secs}))


if __name__ == "__main__":
    main()
