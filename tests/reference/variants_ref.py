#!/usr/bin/python3
"""variants_ref.py — the model variants (heads, baselines, freezing, optimizers) as the notebooks'
torch modules, and the writer of the fixtures tests/unit/test_variants.c compares the C model with.

Run with Debian's python3-torch (no transformers needed):
    /usr/bin/python3 tests/reference/variants_ref.py tests/fixtures/variants

Each fixture is one variant on a tiny random model, float64, dropout off:
  mlp          BERT (bert_ref.py's, at L2 H16 A2) + nn.Sequential MLP on the pooled [CLS] (2 hidden layers,
               ReLU), 3 labels, CE; SGD momentum 0.9 Nesterov, weight decay
  mlp_tanh     the same with Tanh and plain SGD (no momentum), one hidden layer
  gru          BERT + 2-layer bidirectional nn.GRU (packed) -> cat(h[-2], h[-1]) -> Linear out,
               one logit, BCEWithLogits; Adam with (L2) weight decay
  gru_frozen   the same with every bert.* tensor frozen; Adam
  lstm_head    BERT + 1-layer nn.LSTM head, 2 labels, CE; embeddings and layer 0 frozen; AdamW
  lstm_qa      the LSTM baseline: Embedding -> nn.LSTM over each sequence's length (packed) ->
               Linear(C, 2), BertForQuestionAnswering's loss; SGD momentum with dampening
  transformer_qa  the Transformer baseline: Embedding -> nn.TransformerEncoderLayer (key padding
               mask, post-LayerNorm, ReLU) -> Linear(C, 2); AdamW with decay
Every batch has padding inside it (rows of different lengths). Written per fixture: the variant
(ints, floats, the --freeze string), the batches, the initial parameters under their state_dict
names, eval logits and loss of batch 0, the gradient of every trainable parameter, and every
parameter after 5 optimizer steps (2 micro-batches accumulated, clipping, linear warm-up/decay).
The format is bert_ref.py's (BPFIXT01). Regenerating gives the same bytes (seeded generators).
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bert_ref  # noqa: E402
from variant_modules import frozen  # noqa: E402

DTYPE = torch.float64
BODY = {"bert": 0, "lstm": 1, "transformer": 2}
HEAD = {"linear": 0, "mlp": 1, "gru": 2, "lstm": 3}
LOSS = {"auto": 0, "ce": 1, "bce": 2, "mse": 3}
ACT = {"relu": 0, "gelu": 1, "tanh": 2}
OPT = {"adamw": 0, "adam": 1, "sgd": 2}

VARIANTS = {
    "mlp": dict(body="bert", head="mlp", loss="ce", labels=3, mlp=[24, 16], act="relu", freeze="",
                opt=dict(kind="sgd", lr=0.05, weight_decay=0.01, momentum=0.9, dampening=0.0, nesterov=1)),
    "mlp_tanh": dict(body="bert", head="mlp", loss="ce", labels=2, mlp=[20], act="tanh", freeze="",
                     opt=dict(kind="sgd", lr=0.1, weight_decay=0.0, momentum=0.0, dampening=0.0, nesterov=0)),
    "gru": dict(body="bert", head="gru", loss="bce", labels=1, rnn=(2, 8, 1), freeze="",
                opt=dict(kind="adam", lr=1e-2, weight_decay=0.01)),
    "gru_frozen": dict(body="bert", head="gru", loss="bce", labels=1, rnn=(2, 8, 1), freeze="bert",
                       opt=dict(kind="adam", lr=1e-2, weight_decay=0.0)),
    "lstm_head": dict(body="bert", head="lstm", loss="ce", labels=2, rnn=(1, 8, 0), freeze="embeddings,layers:0-0",
                      opt=dict(kind="adamw", lr=1e-2, weight_decay=0.01)),
    "lstm_qa": dict(body="lstm", head="linear", loss="auto", labels=2, hidden=16, freeze="",
                    opt=dict(kind="sgd", lr=0.5, weight_decay=0.001, momentum=0.8, dampening=0.1, nesterov=0)),
    "transformer_qa": dict(body="transformer", head="linear", loss="auto", labels=2, hidden=16, heads=4, ff=24,
                           freeze="", opt=dict(kind="adamw", lr=1e-2, weight_decay=0.01)),
}
SCHEDULE = dict(warmup_steps=2, total_steps=5, accumulation=2, max_grad_norm=0.5)
# bert_ref.py's tiny BERT made smaller still (the heads add their own tensors): L2 H16 A2 I32
CONFIG = dict(bert_ref.CONFIG, vocab_size=48, hidden_size=16, num_attention_heads=2, intermediate_size=32,
              max_position_embeddings=20)


def no_decay(name):
    return "bias" in name or "LayerNorm" in name or ".norm" in name


class Model:
    """A variant: its parameters (name -> tensor) and forward(batch) -> (logits, loss)."""

    def __init__(self, v, gen):
        self.v = v
        self.cfg = dict(CONFIG)
        self.params = {}
        self.modules = {}
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        C = self.cfg["hidden_size"]
        if v["body"] == "bert":
            for name, p in bert_ref.random_params(self.cfg, "cls", 1, gen).items():
                if not name.startswith("classifier."):
                    self.params[name] = p
            if v["head"] == "mlp":
                layers, width = [nn.Dropout(0.0)], C
                for h in v["mlp"]:
                    act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh()}[v["act"]]
                    layers += [nn.Linear(width, h), act, nn.Dropout(0.0)]
                    width = h
                layers.append(nn.Linear(width, v["labels"]))
                self.modules["classifier"] = nn.Sequential(*layers).to(DTYPE)
            else:
                L, H, bi = v["rnn"]
                cls = nn.GRU if v["head"] == "gru" else nn.LSTM
                self.modules["rnn"] = cls(C, H, num_layers=L, bidirectional=bool(bi), batch_first=True,
                                          dropout=0.0).to(DTYPE)
                self.modules["out"] = nn.Linear(H * (2 if bi else 1), v["labels"]).to(DTYPE)
        else:
            C = v["hidden"]
            self.modules["embedding"] = nn.Embedding(self.cfg["vocab_size"], C).to(DTYPE)
            if v["body"] == "lstm":
                self.modules["lstm"] = nn.LSTM(C, C, batch_first=True).to(DTYPE)
            else:
                self.modules["encoder"] = nn.TransformerEncoderLayer(C, v["heads"], v["ff"], dropout=0.0,
                                                                     batch_first=True).to(DTYPE)
            self.modules["qa_outputs"] = nn.Linear(C, 2).to(DTYPE)
        for prefix, module in self.modules.items():
            for name, p in module.named_parameters():
                self.params[f"{prefix}.{name}"] = p
        for name, p in self.params.items():
            p.requires_grad_(not frozen(name, v["freeze"]))

    def forward(self, batch):
        v = self.v
        mask = batch["attention_mask"]
        lengths = mask.sum(1).long()
        if v["body"] == "bert":
            hidden = bert_ref.encoder(self.params, self.cfg, batch["input_ids"], batch["token_type_ids"], mask)
            if v["head"] == "mlp":
                pooled = torch.tanh(bert_ref.linear(hidden[:, 0], self.params, "bert.pooler.dense"))
                logits = self.modules["classifier"](pooled)
            else:
                packed = pack_padded_sequence(hidden, lengths, batch_first=True, enforce_sorted=False)
                _, state = self.modules["rnn"](packed)
                h = state[0] if v["head"] == "lstm" else state
                final = torch.cat((h[-2], h[-1]), dim=1) if v["rnn"][2] else h[-1]
                logits = self.modules["out"](final)
            if v["loss"] == "bce":
                return logits, F.binary_cross_entropy_with_logits(logits[:, 0], batch["labels"].to(DTYPE))
            return logits, F.cross_entropy(logits, batch["labels"].long())
        emb = self.modules["embedding"](batch["input_ids"])
        T = emb.shape[1]
        if v["body"] == "lstm":
            packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.modules["lstm"](packed)
            hidden, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        else:
            hidden = self.modules["encoder"](emb, src_key_padding_mask=mask == 0)
        logits = self.modules["qa_outputs"](hidden)
        start = batch["start_positions"].long().clamp(0, T)
        end = batch["end_positions"].long().clamp(0, T)
        loss = (F.cross_entropy(logits[..., 0], start, ignore_index=T)
                + F.cross_entropy(logits[..., 1], end, ignore_index=T)) / 2
        return logits, loss


def optimizer(model):
    o = model.v["opt"]
    train = [(n, p) for n, p in model.params.items() if p.requires_grad]
    groups = [{"params": [p for n, p in train if not no_decay(n)], "weight_decay": o["weight_decay"]},
              {"params": [p for n, p in train if no_decay(n)], "weight_decay": 0.0}]
    if o["kind"] == "sgd":
        return torch.optim.SGD(groups, lr=o["lr"], momentum=o["momentum"], dampening=o["dampening"],
                               nesterov=bool(o["nesterov"]))
    cls = torch.optim.AdamW if o["kind"] == "adamw" else torch.optim.Adam
    return cls(groups, lr=o["lr"], betas=(0.9, 0.999), eps=1e-8)


def train_steps(model, batches):
    opt = optimizer(model)
    warmup, total = SCHEDULE["warmup_steps"], SCHEDULE["total_steps"]

    def lr_lambda(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    history = []
    trainable = [p for p in model.params.values() if p.requires_grad]
    for _ in range(total):
        opt.zero_grad()
        step_loss = 0.0
        for batch in batches:
            _, loss = model.forward(batch)
            (loss / SCHEDULE["accumulation"]).backward()
            step_loss += loss.item() / SCHEDULE["accumulation"]
        norm = torch.nn.utils.clip_grad_norm_(trainable, SCHEDULE["max_grad_norm"])
        opt.step()
        sched.step()
        history.append((step_loss, float(norm)))
    return history


def make_batch(gen, cfg, lengths, T, v):
    task = "qa" if v["body"] != "bert" else "cls"
    labels = 2 if v["labels"] == 1 else v["labels"]
    batch = bert_ref.make_batch(gen, cfg, lengths, T, task, labels)
    return batch


def build(name, out_dir, seed):
    v = VARIANTS[name]
    gen = torch.Generator().manual_seed(seed)
    model = Model(v, gen)
    cfg = model.cfg
    batches = [make_batch(gen, cfg, [16, 11, 7], 16, v), make_batch(gen, cfg, [12, 9], 12, v)]
    w = bert_ref.FixtureWriter()
    o = v["opt"]
    C = cfg["hidden_size"] if v["body"] == "bert" else v["hidden"]
    mlp = v.get("mlp", []) + [0, 0]
    rnn = v.get("rnn", (0, 0, 0))
    w.add("variant.ints", torch.tensor([
        BODY[v["body"]], HEAD[v["head"]], LOSS[v["loss"]], 0 if v["body"] == "bert" else 1, v["labels"],
        cfg["vocab_size"], C, cfg["num_hidden_layers"] if v["body"] == "bert" else 1,
        v.get("heads", cfg["num_attention_heads"]), v.get("ff", cfg["intermediate_size"]),
        cfg["max_position_embeddings"], cfg["type_vocab_size"], cfg["pad_token_id"],
        len(v.get("mlp", [])), mlp[0], mlp[1], ACT[v.get("act", "relu")], rnn[0], rnn[1], rnn[2],
        OPT[o["kind"]], o.get("nesterov", 0), SCHEDULE["warmup_steps"], SCHEDULE["total_steps"],
        SCHEDULE["accumulation"]], dtype=torch.int32))
    eps = cfg["layer_norm_eps"] if v["body"] == "bert" else 1e-5
    w.add("variant.floats", torch.tensor([eps, o["lr"], o["weight_decay"], SCHEDULE["max_grad_norm"], 0.9, 0.999,
                                          1e-8, o.get("momentum", 0.0), o.get("dampening", 0.0)], dtype=torch.float64))
    w.add("variant.freeze", torch.tensor([ord(c) for c in v["freeze"]] + [0], dtype=torch.int32))
    bert_ref.add_run(w, model.params, batches, model.forward, lambda bs: train_steps(model, bs),
                     os.path.join(out_dir, f"{name}.bin"))

def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/variants"
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    for i, name in enumerate(VARIANTS):
        build(name, out_dir, 7000 + i)


if __name__ == "__main__":
    main()
