#!/usr/bin/python3
"""finetune_peer.py — the PyTorch peer of a bertpipe fine-tuning run.

Same starting weights (the model.safetensors bertpipe wrote with `train --save-init DIR`), the
same batches in the same order (the batch stream bertpipe trained on, recorded as JSON lines
with frames2json), the same hyper-parameters and update rule as Hugging Face's Trainer on CPU:
AdamW (no decay on biases and LayerNorm), get_linear_schedule_with_warmup, clip_grad_norm_,
dropout in training. After training it writes a logits frame (JSON line, the frame protocol's
format) for every evaluation batch, so bertpipe's own postprocess and score judge both runs
the same way. The model is BertForSequenceClassification / BertForQuestionAnswering written with
plain torch ops under Hugging Face's parameter names (Debian python3-torch; no transformers).

  /usr/bin/python3 tests/reference/finetune_peer.py --init DIR --train T.jsonl --eval E.jsonl \
      --out LOGITS.jsonl [--lr 5e-5] [--warmup-steps 0] [--weight-decay 0] [--max-grad-norm 1]
      [--dropout 0.1] [--threads 2] [--seed 0] [--optimizer adamw|adam|sgd] [--schedule linear|constant]
Prints one line: "peer: N steps in S s (X seq/s), final loss L".

A model variant (config.json with a "bertpipe_variant" block: an mlp/gru/lstm head, the lstm or
transformer baselines, frozen parts) runs as the notebook's own torch module
(variant_modules.py), its weights loaded strict from the same model.safetensors; a frozen BERT
runs under torch.no_grad() with requires_grad off, as the IMDB notebook does. A BCE model's
logit x is written as the class scores (0, x), as bertpipe's eval writes it.
"""
import argparse
import base64
import json
import math
import os
import sys
import time

# The peer runs in its fastest configuration here: torch's OpenMP pool spins at barriers by
# default (OMP_WAIT_POLICY=ACTIVE behaviour), which on 2 cores fights OpenBLAS's own threads
# and about halves its speed (docs/benchmarks.md). PASSIVE must be set before libgomp loads,
# that is before `import torch`; a value the caller chose is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_checkpoint_fixtures import read_safetensors  # noqa: E402
import variant_modules  # noqa: E402


def tensor(field, dtype):
    raw = bytearray(base64.b64decode(field["data"]["$bin"]))
    t = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
    return t.reshape(field["shape"]).clone()


def read_batches(path):
    hello, batches = None, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            frame = json.loads(line)
            if frame["k"] == "hello" and hello is None:
                hello = frame
            elif frame["k"] == "batch":
                batches.append(frame)
    return hello, batches


def forward(p, cfg, batch, head, dropout, training):
    ids = tensor(batch["input_ids"], torch.int32).long()
    types = tensor(batch["token_type_ids"], torch.int32).long()
    mask = tensor(batch["attention_mask"], torch.int32)
    B, T = ids.shape
    C, NH, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    D = C // NH

    def drop(x):
        return F.dropout(x, dropout, training)

    def lin(x, name):
        return F.linear(x, p[name + ".weight"], p[name + ".bias"])

    def ln(x, name):
        return F.layer_norm(x, (C,), p[name + ".weight"], p[name + ".bias"], eps)

    e = "bert.embeddings."
    x = (p[e + "word_embeddings.weight"][ids] + p[e + "position_embeddings.weight"][:T].unsqueeze(0)
         + p[e + "token_type_embeddings.weight"][types])
    x = drop(ln(x, e + "LayerNorm"))
    extended = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for layer in range(cfg["num_hidden_layers"]):
        pre = f"bert.encoder.layer.{layer}."

        def heads(t):
            return t.view(B, T, NH, D).permute(0, 2, 1, 3)
        q = heads(lin(x, pre + "attention.self.query"))
        k = heads(lin(x, pre + "attention.self.key"))
        v = heads(lin(x, pre + "attention.self.value"))
        probs = drop(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + extended, dim=-1))
        ctx = (probs @ v).permute(0, 2, 1, 3).reshape(B, T, C)
        a = ln(drop(lin(ctx, pre + "attention.output.dense")) + x, pre + "attention.output.LayerNorm")
        h = F.gelu(lin(a, pre + "intermediate.dense"))
        x = ln(drop(lin(h, pre + "output.dense")) + a, pre + "output.LayerNorm")
    if head == "cls":
        pooled = torch.tanh(lin(x[:, 0], "bert.pooler.dense"))
        logits = lin(drop(pooled), "classifier")
        loss = F.cross_entropy(logits, tensor(batch["labels"], torch.int32).long()) if "labels" in batch else None
        return logits, loss
    logits = lin(x, "qa_outputs")
    start, end = logits[..., 0], logits[..., 1]
    loss = None
    if "start_positions" in batch:
        s = tensor(batch["start_positions"], torch.int32).long().clamp(0, T)
        t = tensor(batch["end_positions"], torch.int32).long().clamp(0, T)
        loss = (F.cross_entropy(start, s, ignore_index=T) + F.cross_entropy(end, t, ignore_index=T)) / 2
    return (start, end), loss


def b64(t):
    return base64.b64encode(t.detach().contiguous().numpy().tobytes()).decode()


def batch_tensors(batch):
    b = {k: tensor(batch[k], torch.int32).long() for k in ("input_ids", "token_type_ids", "attention_mask")}
    for k in ("labels", "start_positions", "end_positions"):
        if k in batch:
            b[k] = tensor(batch[k], torch.int32).long()
    return b


class Variant:
    """A bertpipe model variant as its torch module: forward(batch, training) -> (logits, loss)."""

    def __init__(self, cfg, state):
        self.module, self.kind = variant_modules.build(cfg)
        self.module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        self.frozen = [s for s in cfg["bertpipe_variant"].get("freeze", "").split(",") if s]
        names = dict(self.module.named_parameters())
        for name, p in names.items():
            p.requires_grad_(not self.is_frozen(name))
        self.bert_frozen = hasattr(self.module, "bert") and all(not p.requires_grad for p in self.module.bert.parameters())
        if self.bert_frozen:   # the notebook's torch.no_grad() around the encoder
            inner = self.module.bert.forward

            def frozen_forward(*args):
                with torch.no_grad():
                    return inner(*args)
            self.module.bert.forward = frozen_forward
        self.params = {n: p for n, p in names.items() if p.requires_grad}

    def is_frozen(self, name):
        return any(variant_modules.frozen(name, item) for item in self.frozen)

    def forward(self, batch, training):
        self.module.train(training)
        b = batch_tensors(batch)
        logits = self.module(b)
        loss = variant_modules.loss_of(self.kind, logits, b) if ("labels" in b or "start_positions" in b) else None
        return logits, loss

    def outputs(self, logits):
        """What the logits frame carries: class scores, or start and end logits."""
        if self.kind == "qa":
            return logits[..., 0], logits[..., 1]
        if self.kind == "bce":
            return torch.cat([torch.zeros_like(logits), logits], dim=1)
        return logits


def make_optimizer(a, named):
    no_decay = [v for k, v in named.items() if variant_modules.no_decay(k)]
    decay = [v for k, v in named.items() if not variant_modules.no_decay(k)]
    groups = [{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if a.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=a.lr, momentum=a.momentum, nesterov=a.nesterov)
    cls = torch.optim.AdamW if a.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=a.lr, betas=(0.9, 0.999), eps=1e-8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--optimizer", default="adamw", choices=["adamw", "adam", "sgd"])
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--nesterov", action="store_true")
    ap.add_argument("--schedule", default="linear", choices=["linear", "constant"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    with open(os.path.join(a.init, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    params, _ = read_safetensors(os.path.join(a.init, "model.safetensors"))
    variant = Variant(cfg, params) if "bertpipe_variant" in cfg else None
    if variant:
        params = variant.params
    else:
        params = {k: v.float().requires_grad_(True) for k, v in params.items()}
    head = "qa" if "qa_outputs.weight" in params else "cls"
    if variant:
        head = "qa" if variant.kind == "qa" else "cls"
    _, train = read_batches(a.train)
    hello, evals = read_batches(a.eval)

    opt = make_optimizer(a, params)
    total = len(train)
    warm = a.warmup_steps
    constant = a.schedule == "constant"
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / max(1, warm) if s < warm else 1.0 if constant else max(0.0, (total - s) / max(1, total - warm)))
    start, rows, loss = time.perf_counter(), 0, float("nan")
    for batch in train:
        if variant:
            _, out = variant.forward(batch, True)
        else:
            _, out = forward(params, cfg, batch, head, a.dropout, True)
        out.backward()
        if a.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(params.values()), a.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad()
        rows += batch["input_ids"]["shape"][0]
        loss = out.item()
    seconds = time.perf_counter() - start
    with open(a.out, "w", encoding="utf-8") as f, torch.no_grad():
        f.write(json.dumps({"v": 1, "k": "hello", "from": "finetune_peer", "task": hello.get("task", "classification"),
                            **{k: hello[k] for k in ("labels", "num_labels", "max_length", "stride") if k in hello}},
                           separators=(",", ":")) + "\n")
        for seq, batch in enumerate(evals):
            if variant:
                raw, _ = variant.forward(batch, False)
                logits = variant.outputs(raw)
            else:
                logits, _ = forward(params, cfg, batch, head, 0.0, False)
            frame = {"v": 1, "k": "logits", "seq": seq, "example_ids": batch["example_ids"], "windows": batch["windows"]}
            if head == "cls":
                frame["logits"] = {"dtype": "f32", "shape": list(logits.shape), "data": {"$bin": b64(logits)}}
                if "labels" in batch:
                    frame["labels"] = batch["labels"]
            else:
                s, e = logits
                frame["start_logits"] = {"dtype": "f32", "shape": list(s.shape), "data": {"$bin": b64(s)}}
                frame["end_logits"] = {"dtype": "f32", "shape": list(e.shape), "data": {"$bin": b64(e)}}
                for key in ("offsets", "start_positions", "end_positions"):
                    if key in batch:
                        frame[key] = batch[key]
            f.write(json.dumps(frame, separators=(",", ":"), ensure_ascii=False) + "\n")
        f.write(json.dumps({"v": 1, "k": "eos", "from": "finetune_peer", "count": len(evals)}) + "\n")
    print(f"peer: {total} steps in {seconds:.1f} s ({rows / seconds:.1f} seq/s), final loss {loss:.4f}")


if __name__ == "__main__":
    main()
