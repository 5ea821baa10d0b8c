#!/usr/bin/python3
"""bench_train_torch.py — the PyTorch peer of tests/bench/bench_train.c: the same BERT shape,
the same batches (same formula), the same step (forward, backward, clip_grad_norm_, AdamW with
decay groups, linear warm-up schedule), timed the same way.

    /usr/bin/python3 tests/reference/bench_train_torch.py --head cls|qa [--batch B] [--seq T]
        [--steps K] [--threads N] [--layers L --hidden H --heads A --intermediate I]
        [--precision fp32|bf16]

The model is written with torch.nn modules laid out like Hugging Face's BertForSequenceClassification
/ BertForQuestionAnswering (eager, float32, dropout 0.1 in training), which is what the HF Trainer
runs on CPU. --precision bf16 runs the forward passes (training and eval) under
torch.autocast("cpu", dtype=torch.bfloat16), the mixed precision a PyTorch user reaches for on a
CPU (the HF Trainer's --bf16 on CPU does the same); weights and optimizer stay float32.
Prints one line:
    impl torch head cls batch 32 seq 128 train_seq_s X eval_seq_s Y peak_rss_mb Z loss L train_cpu_s_per_step S
(impl torch-bf16 with --precision bf16).
(CPU seconds include OpenMP workers waiting at barriers.)
"""
import argparse
import math
import os
import resource
import time

# The peer runs in its fastest configuration here: torch's OpenMP pool spins at barriers by
# default (OMP_WAIT_POLICY=ACTIVE behaviour), which on 2 cores fights OpenBLAS's own threads
# and about halves its speed (docs/benchmarks.md). PASSIVE must be set before libgomp loads,
# that is before `import torch`; a value the caller chose is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
import torch.nn as nn
import torch.nn.functional as F


class Layer(nn.Module):
    def __init__(self, C, NH, I, eps, p):
        super().__init__()
        self.NH = NH
        self.query, self.key, self.value = nn.Linear(C, C), nn.Linear(C, C), nn.Linear(C, C)
        self.attn_out, self.attn_ln = nn.Linear(C, C), nn.LayerNorm(C, eps=eps)
        self.inter, self.out, self.out_ln = nn.Linear(C, I), nn.Linear(I, C), nn.LayerNorm(C, eps=eps)
        self.drop = nn.Dropout(p)

    def forward(self, x, extended_mask):
        B, T, C = x.shape
        D = C // self.NH

        def heads(t):
            return t.view(B, T, self.NH, D).permute(0, 2, 1, 3)
        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(D) + extended_mask
        probs = self.drop(torch.softmax(scores, dim=-1))
        ctx = (probs @ v).permute(0, 2, 1, 3).reshape(B, T, C)
        a = self.attn_ln(self.drop(self.attn_out(ctx)) + x)
        return self.out_ln(self.drop(self.out(F.gelu(self.inter(a)))) + a)


class Bert(nn.Module):
    def __init__(self, head, V=30522, C=256, L=4, NH=4, I=1024, P=512, K=2, eps=1e-12, p=0.1, labels=2):
        super().__init__()
        self.head = head
        self.word, self.pos, self.token_type = nn.Embedding(V, C, padding_idx=0), nn.Embedding(P, C), nn.Embedding(K, C)
        self.ln, self.drop = nn.LayerNorm(C, eps=eps), nn.Dropout(p)
        self.layers = nn.ModuleList([Layer(C, NH, I, eps, p) for _ in range(L)])
        if head == "cls":
            self.pooler, self.classifier = nn.Linear(C, C), nn.Linear(C, labels)
        else:
            self.qa_outputs = nn.Linear(C, 2)
        for m in self.modules():   # HF _init_weights
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.data.normal_(0.0, 0.02)
            if isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, ids, types, mask, labels=None, starts=None, ends=None):
        B, T = ids.shape
        x = self.drop(self.ln(self.word(ids) + self.pos.weight[:T].unsqueeze(0) + self.token_type(types)))
        extended = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, extended)
        if self.head == "cls":
            logits = self.classifier(self.drop(torch.tanh(self.pooler(x[:, 0]))))
            return F.cross_entropy(logits, labels)
        logits = self.qa_outputs(x)
        s, e = logits[..., 0], logits[..., 1]
        return (F.cross_entropy(s, starts.clamp(0, T), ignore_index=T)
                + F.cross_entropy(e, ends.clamp(0, T), ignore_index=T)) / 2


def make_batch(k, B, T, V, num_labels):
    """Batch k, the formula of tests/bench/bench_train.c."""
    ids = torch.zeros(B, T, dtype=torch.long)
    types = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    labels, starts, ends = [], [], []
    for b in range(B):
        n = T - ((b * 7 + k * 3) % (T // 4))
        for t in range(n):
            ids[b, t] = (b * 1009 + t * 131 + k * 17) % (V - 1000) + 1000
        ids[b, 0], ids[b, n - 1] = 101, 102
        types[b, n // 2:n] = 1
        mask[b, :n] = 1
        labels.append((b + k) % num_labels)
        s = (b * 5 + k) % n
        starts.append(s)
        ends.append(s + (b % 4) if s + (b % 4) < n else n - 1)
    return ids, types, mask, torch.tensor(labels), torch.tensor(starts), torch.tensor(ends)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--head", default="cls", choices=["cls", "qa"])
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=1024)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = ap.parse_args()
    bf16 = a.precision == "bf16"
    B = a.batch or (12 if a.head == "qa" else 32)
    T = a.seq or (384 if a.head == "qa" else 128)
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = Bert(a.head, C=a.hidden, L=a.layers, NH=a.heads, I=a.intermediate)
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "ln" in n.split(".")[-2])]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "ln" in n.split(".")[-2]]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=5e-5, eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / 2 if s < 2 else max(0.0, (1000 - s) / 998))
    batches = [make_batch(k, B, T, 30522, 2) for k in range(a.steps + 2)]
    model.train()
    train_time, loss, cpu_start = 0.0, float("nan"), 0.0
    for k, (ids, types, mask, labels, starts, ends) in enumerate(batches):
        if k == 2:
            cpu_start = time.process_time()
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(ids, types, mask, labels, starts, ends)
        out.float().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if k >= 2:
            train_time += time.perf_counter() - t0
        loss = out.item()
    train_cpu = time.process_time() - cpu_start
    model.eval()
    eval_time = 0.0
    with torch.no_grad():
        for k, (ids, types, mask, labels, starts, ends) in enumerate(batches[:a.steps + 1]):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(ids, types, mask, labels, starts, ends)
            if k >= 1:
                eval_time += time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"impl {'torch-bf16' if bf16 else 'torch'} head {a.head} batch {B} seq {T} train_seq_s {a.steps * B / train_time:.2f} "
          f"eval_seq_s {a.steps * B / eval_time:.2f} peak_rss_mb {rss:.0f} loss {loss:.4f} "
          f"train_cpu_s_per_step {train_cpu / a.steps:.3f}")


if __name__ == "__main__":
    main()
