#!/usr/bin/python3
"""bert_ref.py — reference BERT (Hugging Face BertForSequenceClassification /
BertForQuestionAnswering semantics, parameter names and shapes) in plain PyTorch, and the writer
of the fixtures tests/unit/test_bert.c compares the C model against.

Run with Debian's python3-torch (no transformers needed):
    /usr/bin/python3 tests/reference/bert_ref.py tests/fixtures/bert

It builds a tiny random model (L2 H32 A4 I64, vocab 64), two padded micro-batches, and writes for
each head (cls.bin, qa.bin): the config, the inputs, the initial parameters, eval-mode logits and
loss of micro-batch 0, every parameter's gradient of that loss, and the parameters after 5 AdamW
steps (torch.optim.AdamW, decay off for biases and LayerNorm, get_linear_schedule_with_warmup,
clip_grad_norm_, 2 micro-batches accumulated per step). Dropout is off. The math runs in float64
so the fixture is the exact answer and the C float32 error is measured against it.

Fixture format (little-endian): b"BPFIXT01", u32 count, then per tensor: u16 name length, name,
u8 dtype (0 f32, 1 i32), u8 ndim, u32 dims[ndim], data.
"""
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

DTYPE = torch.float64

CONFIG = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=24, type_vocab_size=2,
              pad_token_id=0, layer_norm_eps=1e-12)
OPTIM = dict(lr=1e-2, weight_decay=0.01, max_grad_norm=0.5, warmup_steps=2, total_steps=5,
             accumulation=2, beta1=0.9, beta2=0.999, eps=1e-8)


def param_shapes(cfg, head, num_labels):
    """HF state_dict names and shapes, in the order the fixture stores them."""
    C, I = cfg["hidden_size"], cfg["intermediate_size"]
    shapes = [("bert.embeddings.word_embeddings.weight", (cfg["vocab_size"], C)),
              ("bert.embeddings.position_embeddings.weight", (cfg["max_position_embeddings"], C)),
              ("bert.embeddings.token_type_embeddings.weight", (cfg["type_vocab_size"], C)),
              ("bert.embeddings.LayerNorm.weight", (C,)),
              ("bert.embeddings.LayerNorm.bias", (C,))]
    for l in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{l}."
        for k in ("query", "key", "value"):
            shapes += [(p + f"attention.self.{k}.weight", (C, C)), (p + f"attention.self.{k}.bias", (C,))]
        shapes += [(p + "attention.output.dense.weight", (C, C)), (p + "attention.output.dense.bias", (C,)),
                   (p + "attention.output.LayerNorm.weight", (C,)), (p + "attention.output.LayerNorm.bias", (C,)),
                   (p + "intermediate.dense.weight", (I, C)), (p + "intermediate.dense.bias", (I,)),
                   (p + "output.dense.weight", (C, I)), (p + "output.dense.bias", (C,)),
                   (p + "output.LayerNorm.weight", (C,)), (p + "output.LayerNorm.bias", (C,))]
    if head == "cls":
        shapes += [("bert.pooler.dense.weight", (C, C)), ("bert.pooler.dense.bias", (C,)),
                   ("classifier.weight", (num_labels, C)), ("classifier.bias", (num_labels,))]
    else:
        shapes += [("qa_outputs.weight", (2, C)), ("qa_outputs.bias", (2,))]
    return shapes


def random_params(cfg, head, num_labels, gen):
    """Random weights; biases and LayerNorm are perturbed too so the test sees them work."""
    params = {}
    for name, shape in param_shapes(cfg, head, num_labels):
        noise = torch.randn(shape, generator=gen, dtype=DTYPE)
        if name.endswith("LayerNorm.weight"):
            value = 1.0 + 0.1 * noise
        elif name.endswith("bias"):
            value = 0.05 * noise
        else:
            value = 0.1 * noise
        params[name] = value.requires_grad_(True)
    return params


def linear(x, params, prefix):
    return x @ params[prefix + ".weight"].t() + params[prefix + ".bias"]


def layer_norm(x, params, prefix, eps):
    return F.layer_norm(x, (x.shape[-1],), params[prefix + ".weight"], params[prefix + ".bias"], eps)


def encoder(params, cfg, input_ids, token_type_ids, attention_mask):
    """BertModel.forward in eval mode: the last hidden state [B, T, C]."""
    B, T = input_ids.shape
    C, NH = cfg["hidden_size"], cfg["num_attention_heads"]
    D = C // NH
    eps = cfg["layer_norm_eps"]
    x = (F.embedding(input_ids, params["bert.embeddings.word_embeddings.weight"], padding_idx=cfg["pad_token_id"])
         + params["bert.embeddings.position_embeddings.weight"][:T].unsqueeze(0)
         + params["bert.embeddings.token_type_embeddings.weight"][token_type_ids])
    x = layer_norm(x, params, "bert.embeddings.LayerNorm", eps)
    # get_extended_attention_mask: (1 - mask) * finfo.min added to the scores of padded keys
    extended = (1.0 - attention_mask[:, None, None, :].to(DTYPE)) * torch.finfo(DTYPE).min
    for l in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{l}."

        def heads(t):
            return t.view(B, T, NH, D).permute(0, 2, 1, 3)
        q = heads(linear(x, params, p + "attention.self.query"))
        k = heads(linear(x, params, p + "attention.self.key"))
        v = heads(linear(x, params, p + "attention.self.value"))
        scores = q @ k.transpose(-1, -2) / math.sqrt(D) + extended
        probs = torch.softmax(scores, dim=-1)
        ctx = (probs @ v).permute(0, 2, 1, 3).reshape(B, T, C)
        attn = layer_norm(linear(ctx, params, p + "attention.output.dense") + x, params,
                          p + "attention.output.LayerNorm", eps)
        inter = F.gelu(linear(attn, params, p + "intermediate.dense"))
        x = layer_norm(linear(inter, params, p + "output.dense") + attn, params, p + "output.LayerNorm", eps)
    return x


def model_loss(params, cfg, head, batch):
    """(logits, loss) as BertForSequenceClassification / BertForQuestionAnswering."""
    hidden = encoder(params, cfg, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    if head == "cls":
        pooled = torch.tanh(linear(hidden[:, 0], params, "bert.pooler.dense"))
        logits = linear(pooled, params, "classifier")
        return logits, F.cross_entropy(logits, batch["labels"].long())
    logits = linear(hidden, params, "qa_outputs")            # [B, T, 2]
    start_logits, end_logits = logits[..., 0], logits[..., 1]
    ignored = start_logits.shape[1]
    start = batch["start_positions"].long().clamp(0, ignored)
    end = batch["end_positions"].long().clamp(0, ignored)
    loss = (F.cross_entropy(start_logits, start, ignore_index=ignored)
            + F.cross_entropy(end_logits, end, ignore_index=ignored)) / 2
    return logits, loss


def make_batch(gen, cfg, lengths, T, head, num_labels):
    B = len(lengths)
    ids = torch.zeros(B, T, dtype=torch.int32)
    types = torch.zeros(B, T, dtype=torch.int32)
    mask = torch.zeros(B, T, dtype=torch.int32)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(1, cfg["vocab_size"], (n,), generator=gen, dtype=torch.int32)
        types[b, n // 2:n] = 1
        mask[b, :n] = 1
    batch = dict(input_ids=ids, token_type_ids=types, attention_mask=mask)
    if head == "cls":
        batch["labels"] = torch.randint(0, num_labels, (B,), generator=gen, dtype=torch.int32)
    else:
        # in range, beyond T (clamped to T, ignored) and negative (clamped to 0, counted)
        batch["start_positions"] = torch.tensor([3, T + 4, -2][:B], dtype=torch.int32)
        batch["end_positions"] = torch.tensor([5, 2, T][:B], dtype=torch.int32)
    return {k: v.long() if k in ("input_ids", "token_type_ids") else v for k, v in batch.items()}


def train_steps(params, cfg, head, batches):
    """5 optimizer steps as the HF Trainer takes them; returns per-step (loss, grad norm)."""
    no_decay = [p for n, p in params.items() if n.endswith("bias") or "LayerNorm.weight" in n]
    decay = [p for n, p in params.items() if not (n.endswith("bias") or "LayerNorm.weight" in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPTIM["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=OPTIM["lr"], betas=(OPTIM["beta1"], OPTIM["beta2"]), eps=OPTIM["eps"])
    warmup, total = OPTIM["warmup_steps"], OPTIM["total_steps"]

    def lr_lambda(step):   # get_linear_schedule_with_warmup
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    history = []
    for _ in range(total):
        opt.zero_grad()
        step_loss = 0.0
        for batch in batches:
            _, loss = model_loss(params, cfg, head, batch)
            (loss / OPTIM["accumulation"]).backward()
            step_loss += loss.item() / OPTIM["accumulation"]
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), OPTIM["max_grad_norm"])
        opt.step()
        sched.step()
        history.append((step_loss, float(norm)))
    return history


class FixtureWriter:
    def __init__(self):
        self.items = []

    def add(self, name, tensor):
        t = tensor.detach()
        if t.dtype in (torch.int32, torch.int64):
            self.items.append((name, 1, t.to(torch.int32).contiguous()))
        else:
            self.items.append((name, 0, t.to(torch.float32).contiguous()))

    def write(self, path):
        with open(path, "wb") as f:
            f.write(b"BPFIXT01")
            f.write(struct.pack("<I", len(self.items)))
            for name, dtype, t in self.items:
                raw = name.encode()
                f.write(struct.pack("<H", len(raw)) + raw)
                f.write(struct.pack("<BB", dtype, t.dim()))
                f.write(struct.pack(f"<{t.dim()}I", *t.shape))
                f.write(t.numpy().tobytes())


def build(head, out_dir):
    num_labels = 3 if head == "cls" else 2
    gen = torch.Generator().manual_seed(1234 if head == "cls" else 4321)
    cfg = CONFIG
    params = random_params(cfg, head, num_labels, gen)
    batches = [make_batch(gen, cfg, [16, 11, 7], 16, head, num_labels),
               make_batch(gen, cfg, [12, 9], 12, head, num_labels)]
    w = FixtureWriter()
    w.add("config.ints", torch.tensor([cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"],
                                       cfg["num_attention_heads"], cfg["intermediate_size"],
                                       cfg["max_position_embeddings"], cfg["type_vocab_size"],
                                       cfg["pad_token_id"], num_labels, 0 if head == "cls" else 1],
                                      dtype=torch.int32))
    w.add("config.floats", torch.tensor([cfg["layer_norm_eps"]], dtype=torch.float64))
    w.add("optim.floats", torch.tensor([OPTIM["lr"], OPTIM["weight_decay"], OPTIM["max_grad_norm"],
                                        OPTIM["beta1"], OPTIM["beta2"], OPTIM["eps"]], dtype=torch.float64))
    w.add("optim.ints", torch.tensor([OPTIM["warmup_steps"], OPTIM["total_steps"], OPTIM["accumulation"]],
                                     dtype=torch.int32))
    add_run(w, params, batches, lambda b: model_loss(params, cfg, head, b),
            lambda bs: train_steps(params, cfg, head, bs), os.path.join(out_dir, f"{head}.bin"))


def add_run(w, params, batches, forward, train, path):
    """The part every fixture shares (variants_ref.py too): the batches, the parameters, the first
    batch's logits, loss and gradients (of the parameters that get one), the losses and gradient
    norms of the training steps and the parameters after them; written to path."""
    for i, batch in enumerate(batches):
        for k, t in batch.items():
            w.add(f"batch{i}.{k}", t)
    for name, p in params.items():
        w.add("param." + name, p)
    logits, loss = forward(batches[0])
    loss.backward()
    w.add("logits", logits)
    w.add("loss", loss.reshape(1))
    for name, p in params.items():
        if p.grad is not None:
            w.add("grad." + name, p.grad)
        p.grad = None
    history = train(batches)
    w.add("train.losses", torch.tensor([h[0] for h in history], dtype=torch.float64))
    w.add("train.grad_norms", torch.tensor([h[1] for h in history], dtype=torch.float64))
    for name, p in params.items():
        w.add("step5." + name, p)
    w.write(path)
    print(f"{path}: loss {loss.item():.6f}, grad norms {[round(h[1], 4) for h in history]}")

def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/bert"
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    for head in ("cls", "qa"):
        build(head, out_dir)


if __name__ == "__main__":
    main()
