#!/usr/bin/python3
"""bench_gpu_torch.py — the PyTorch peer of tests/bench/bench_gpu.c: the same BERT shape
(Base or Mini), the same batches (the same formula), the same training step (forward,
backward, clip_grad_norm_, AdamW with decay groups, warm-up schedule) on the same GPU, eager.

    python3 tests/reference/bench_gpu_torch.py --model base|mini --head cls|qa --seq T --batch B
        --precision fp32|tf32|bf16 [--steps K]

Precision as the C side: fp32 (TF32 off), tf32 (torch.backends.cuda.matmul.allow_tf32), bf16
(torch.autocast to bfloat16 around forward and loss, float32 weights and optimizer: the usual
mixed-precision recipe). The model is bench_train_torch.py's (HF BertFor* layout).
Prints one line of "key value" pairs like bench_gpu.c; exits 1 with a message when there is no
CUDA device.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train_torch import Bert  # noqa: E402

SHAPES = {"base": dict(C=768, L=12, NH=12, I=3072), "mini": dict(C=256, L=4, NH=4, I=1024)}


def make_batch(k, B, T, V):
    """Batch k: the formula of fill_batch in tests/bench/bench_gpu.c."""
    ids = torch.zeros(B, T, dtype=torch.long)
    types = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    labels, starts, ends = [], [], []
    for b in range(B):
        n = T - (b * 5 + k) % (T // 4)
        for t in range(n):
            ids[b, t] = (b * 7919 + t * 613 + k * 37) % (V - 2000) + 2000
        ids[b, 0], ids[b, n - 1] = 101, 102
        types[b, n // 2:n] = 1
        mask[b, :n] = 1
        labels.append((b + k) % 2)
        s = n // 2 + (b + k) % (n // 4 + 1)
        starts.append(s)
        ends.append(s + b % 3 if s + b % 3 < n else n - 1)
    return ids, types, mask, torch.tensor(labels), torch.tensor(starts), torch.tensor(ends)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="base", choices=["base", "mini"])
    ap.add_argument("--head", default="cls", choices=["cls", "qa"])
    ap.add_argument("--seq", type=int)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu_torch: no CUDA device visible to PyTorch", file=sys.stderr)
        sys.exit(1)
    T = a.seq or (384 if a.head == "qa" else 128)
    B = a.batch
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = a.precision == "tf32"
    torch.backends.cudnn.allow_tf32 = a.precision == "tf32"
    torch.manual_seed(1)
    model = Bert(a.head, **SHAPES[a.model]).to(dev)
    names = [(n, p) for n, p in model.named_parameters()]
    decay = [p for n, p in names if not (n.endswith("bias") or "ln" in n.split(".")[-2])]
    no_decay = [p for n, p in names if n.endswith("bias") or "ln" in n.split(".")[-2]]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=5e-5, eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / 2 if s < 2 else max(0.0, (1000 - s) / 998))
    batches = [[t.to(dev) for t in make_batch(k, B, T, 30522)] for k in range(a.steps + 2)]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.precision == "bf16")

    model.train()
    t0 = 0.0
    for k, (ids, types, mask, labels, starts, ends) in enumerate(batches):
        if k == 2:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with autocast:
            out = model(ids, types, mask, labels, starts, ends)
        out.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    train_time = time.perf_counter() - t0
    loss = out.item()
    model.eval()
    with torch.no_grad():
        for k, (ids, types, mask, labels, starts, ends) in enumerate(batches):
            if k == 2:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            with autocast:
                model(ids, types, mask, labels, starts, ends)
        torch.cuda.synchronize()
    eval_time = time.perf_counter() - t0
    s = SHAPES[a.model]
    C, I, L = s["C"], s["I"], s["L"]
    flops = 6.0 * B * T * L * (4 * C * C + 2 * C * I) + 12.0 * L * B * T * T * C
    device = torch.cuda.get_device_name(0).replace(" ", "_")
    print(f"impl torch model {a.model} precision {a.precision} head {a.head} batch {B} seq {T} "
          f"train_seq_s {a.steps * B / train_time:.2f} eval_seq_s {a.steps * B / eval_time:.2f} "
          f"model_tflops_train {flops * a.steps / train_time / 1e12:.2f} loss {loss:.4f} device {device}")


if __name__ == "__main__":
    main()
