"""PyTorch eager reference for the trainer step: the identical model
(python/pretext_model.py) loaded from the weights `pretext-bench train`
wrote, checked to give the same logits on the same batch, then timed on the
same batch shape with the same thread count (AdamW, loss on masked positions).
The timed steps run on DEVICE (cpu or cuda; default cpu) in eager mode, or
under torch.autocast to bfloat16 with PRECISION bf16 (default full).

Usage: train_reference.py DIR STEPS THREADS [DEVICE [PRECISION]]  -> JSON on stdout
"""
import contextlib
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import pretext_model  # noqa: E402


def main():
    out, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    device = sys.argv[4] if len(sys.argv) > 4 else "cpu"
    precision = sys.argv[5] if len(sys.argv) > 5 else "full"
    assert device in ("cpu", "cuda") and precision in ("full", "bf16"), (device, precision)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    model = pretext_model.load(out)
    b = pretext_model.read_safetensors(os.path.join(out, "batch.safetensors"))
    with torch.no_grad():
        logits = model(b["tokens"], b["lengths"])
    mask = (torch.arange(b["tokens"].shape[1]).unsqueeze(0) < b["lengths"].unsqueeze(1)).unsqueeze(1)
    diff = ((logits - b["logits"]).abs() * mask).max().item()
    model.to(device).train()
    b = {k: v.to(device) for k, v in b.items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    def autocast():
        if precision == "bf16":
            return torch.autocast(device_type=device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def step():
        opt.zero_grad()
        with autocast():
            s, n = model.loss_sum(b["tokens"], b["lengths"], b["targets"], b["loss_mask"])
        (s / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    secs = time.perf_counter() - t0
    real = int(b["lengths"].sum())
    print(json.dumps({"max_abs_logit_diff": diff, "seconds": secs, "tokens_per_s": real * steps / secs,
                      "device": device, "precision": precision}))


if __name__ == "__main__":
    main()
