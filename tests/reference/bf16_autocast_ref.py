#!/usr/bin/python3
"""bf16_autocast_ref.py — how far torch.autocast("cpu", dtype=torch.bfloat16) moves BERT's logits
and gradients from float32, on weights and batches that tests/unit/test_bf16.c rebuilds exactly,
so the C model's bf16 distance can be reported beside PyTorch's.

    /usr/bin/python3 tests/reference/bf16_autocast_ref.py tests/fixtures/bert/bf16_autocast.bin

Four cases: the tiny shape of bert_ref.py (L2 H32 A4 I64, vocab 64) and the BERT-Mini shape
(L4 H256 A4 I1024; vocab 1000 and 128 positions to keep it small), each with the classification
and the QA head. Weights come from a formula both sides compute bit for bit (integer hashing,
no libm): element k of the tensor named NAME is u = (splitmix64(fnv1a(NAME) + k) >> 40) / 2^24,
taken to [-1, 1) as 2u - 1, then LayerNorm weights 1 + 0.1 x, biases 0.05 x, other weights
SCALE x (0.1 tiny, 0.05 mini). Dropout is off. Batches: ids (b * 131 + t * 71 + 7) % (V - 1) + 1
for t below the row's length, types 1 from the middle, labels b % num_labels; QA positions
start (3b + 1) % len, end start + 2 clamped to len - 1.

The fixture (bert_ref.py's BPFIXT01 format) holds per case CASE in tiny_cls, tiny_qa, mini_cls,
mini_qa: CASE.lengths (the rows' lengths), CASE.T, CASE.logits32 (torch float32),
CASE.logits_autocast, and CASE.distances = [logits, gradients]: max |autocast - fp32| over
max |fp32| for the logits; for the gradients the same over every parameter, against the largest
fp32 gradient of the model (as tests/gpu/test_gpu_parity.c measures bf16 gradients).
"""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bert_ref  # noqa: E402

bert_ref.DTYPE = torch.float32   # the reference model, run in float32 (and under autocast)
MASK64 = (1 << 64) - 1

CASES = {
    "tiny": dict(cfg=dict(bert_ref.CONFIG), scale=0.1, lengths=[16, 11, 7], T=16),
    "mini": dict(cfg=dict(vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                          intermediate_size=1024, max_position_embeddings=128, type_vocab_size=2,
                          pad_token_id=0, layer_norm_eps=1e-12),
                 scale=0.05, lengths=[64, 50, 33, 20], T=64),
}


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def fnv1a(name):
    h = 0xCBF29CE484222325
    for byte in name.encode():
        h = ((h ^ byte) * 0x100000001B3) & MASK64
    return h


def formula_tensor(name, shape, scale):
    n = 1
    for d in shape:
        n *= d
    base = fnv1a(name)
    values = [((splitmix64((base + k) & MASK64) >> 40) / 16777216.0) * 2.0 - 1.0 for k in range(n)]
    x = torch.tensor(values, dtype=torch.float32).reshape(shape)
    if name.endswith("LayerNorm.weight"):
        return 1.0 + 0.1 * x
    if name.endswith("bias"):
        return 0.05 * x
    return scale * x


def formula_batch(cfg, lengths, T, head, num_labels):
    B, V = len(lengths), cfg["vocab_size"]
    ids = torch.zeros(B, T, dtype=torch.long)
    types = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.int32)
    for b, n in enumerate(lengths):
        for t in range(n):
            ids[b, t] = (b * 131 + t * 71 + 7) % (V - 1) + 1
        types[b, n // 2:n] = 1
        mask[b, :n] = 1
    batch = dict(input_ids=ids, token_type_ids=types, attention_mask=mask)
    if head == "cls":
        batch["labels"] = torch.tensor([b % num_labels for b in range(B)], dtype=torch.int32)
    else:
        starts = [(3 * b + 1) % n for b, n in enumerate(lengths)]
        batch["start_positions"] = torch.tensor(starts, dtype=torch.int32)
        batch["end_positions"] = torch.tensor([min(s + 2, n - 1) for s, n in zip(starts, lengths)], dtype=torch.int32)
    return batch


def run(params, cfg, head, batch, autocast):
    for p in params.values():
        p.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits, loss = bert_ref.model_loss(params, cfg, head, batch)
    loss.float().backward()
    return logits.float().detach(), {n: p.grad.clone() for n, p in params.items()}


def distance(a, b):
    return float((a - b).abs().max() / b.abs().max())


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/bert/bf16_autocast.bin"
    torch.set_num_threads(2)
    w = bert_ref.FixtureWriter()
    for shape, case in CASES.items():
        for head in ("cls", "qa"):
            num_labels = 3 if head == "cls" else 2
            cfg = case["cfg"]
            params = {name: formula_tensor(name, s, case["scale"]).requires_grad_(True)
                      for name, s in bert_ref.param_shapes(cfg, head, num_labels)}
            batch = formula_batch(cfg, case["lengths"], case["T"], head, num_labels)
            logits32, grads32 = run(params, cfg, head, batch, False)
            logits16, grads16 = run(params, cfg, head, batch, True)
            scale = max(float(g.abs().max()) for g in grads32.values())
            grad_dist = max(float((grads16[n] - grads32[n]).abs().max()) for n in grads32) / scale
            name = f"{shape}_{head}"
            w.add(name + ".lengths", torch.tensor(case["lengths"], dtype=torch.int32))
            w.add(name + ".T", torch.tensor([case["T"]], dtype=torch.int32))
            w.add(name + ".logits32", logits32)
            w.add(name + ".logits_autocast", logits16)
            w.add(name + ".distances", torch.tensor([distance(logits16, logits32), grad_dist]))
            print(f"{name}: autocast bf16 vs fp32: logits {distance(logits16, logits32):.2e}, "
                  f"gradients {grad_dist:.2e} (of the largest)")
    w.write(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
