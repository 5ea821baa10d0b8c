#!/usr/bin/python3
"""bench_variants_torch.py — the PyTorch peer of tests/bench/bench_variants.c: the same models
(the notebooks' modules, tests/reference/variant_modules.py), the same batches (bench_batches.h's
formula, as bench_train_torch.py writes it), the same step (forward, backward, clip_grad_norm_,
Adam, zero_grad), timed the same way.

    /usr/bin/python3 tests/reference/bench_variants_torch.py --model bigru-frozen|bigru|lstm|transformer
        [--batch B] [--seq T] [--steps K] [--threads N] [--hidden H] [--heads A] [--ff F]

bigru-frozen runs the frozen BERT under torch.no_grad(), as the IMDB notebook does (its
parameters have requires_grad False and the optimizer gets the head's only); dropout stays on
in training, as the notebook's model.train() leaves it. Prints one line:
    impl torch model M batch B seq T hidden H train_seq_s X peak_rss_mb Z loss L train_cpu_s_per_step S
"""
import argparse
import os
import resource
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # the peer's fastest configuration here
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train_torch import make_batch  # noqa: E402
import variant_modules  # noqa: E402


class FrozenBertGRU(variant_modules.BertGRUSentiment):
    """The IMDB notebook's forward: the encoder under no_grad."""

    def forward(self, b):
        with torch.no_grad():
            hidden, _ = self.bert(b["input_ids"], b["token_type_ids"], b["attention_mask"])
        packed = torch.nn.utils.rnn.pack_padded_sequence(hidden, variant_modules.lengths_of(b["attention_mask"]),
                                                         batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)
        return self.out(self.dropout(torch.cat((h[-2], h[-1]), dim=1)))


def build(a):
    if a.model.startswith("bigru"):
        cfg = dict(vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                   max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, hidden_dropout_prob=0.1,
                   pad_token_id=0)
        cls = FrozenBertGRU if a.model == "bigru-frozen" else variant_modules.BertGRUSentiment
        m = cls(cfg, 1, "gru", 2, 256, True, 0.25, 0.25)
        if a.model == "bigru-frozen":
            for p in m.bert.parameters():
                p.requires_grad_(False)
        return m, "bce"
    cfg = dict(vocab_size=30522, hidden_size=a.hidden, num_attention_heads=a.heads, intermediate_size=a.ff,
               layer_norm_eps=1e-5, hidden_dropout_prob=0.1)
    m = variant_modules.LSTMForQuestionAnswering(cfg) if a.model == "lstm" else \
        variant_modules.TransformerForQuestionAnswering(cfg)
    return m, "qa"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bigru-frozen", choices=["bigru-frozen", "bigru", "lstm", "transformer"])
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--ff", type=int, default=2048)
    a = ap.parse_args()
    bigru = a.model.startswith("bigru")
    B = a.batch or (32 if bigru else 12)
    T = a.seq or (128 if bigru else 384)
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model, kind = build(a)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    batches = []
    for k in range(a.steps + 2):
        ids, types, mask, labels, starts, ends = make_batch(k, B, T, 30522, 2)
        batches.append(dict(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels,
                            start_positions=starts, end_positions=ends))
    model.train()
    train_time, loss, cpu_start = 0.0, float("nan"), 0.0
    for k, b in enumerate(batches):
        if k == 2:
            cpu_start = time.process_time()
        t0 = time.perf_counter()
        out = variant_modules.loss_of(kind, model(b), b)
        out.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        if k >= 2:
            train_time += time.perf_counter() - t0
        loss = out.item()
    train_cpu = time.process_time() - cpu_start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    hidden = 256 if bigru else a.hidden
    print(f"impl torch model {a.model} batch {B} seq {T} hidden {hidden} train_seq_s {a.steps * B / train_time:.2f} "
          f"peak_rss_mb {rss:.0f} loss {loss:.4f} train_cpu_s_per_step {train_cpu / a.steps:.3f}")


if __name__ == "__main__":
    main()
