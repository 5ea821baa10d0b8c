#!/usr/bin/python3
"""variant_roundtrip.py — a bertpipe checkpoint of any model variant in the notebook's torch module.

    /usr/bin/python3 tests/reference/variant_roundtrip.py CKPT_DIR BATCHES.jsonl OUT.json [OURS.jsonl]

Builds the module for CKPT_DIR/config.json (variant_modules.py), loads CKPT_DIR/model.safetensors
with load_state_dict(strict=True) (every name and shape must match, none missing, none extra),
and writes eval-mode logits for every batch frame of BATCHES.jsonl (frames2json's JSON lines)
to OUT.json as {"example_id/window": [...]}: classification rows (bce: the one logit), QA the
start and end logits of the tokens the attention mask keeps. Prints the module's class and its
number of parameters. With OURS.jsonl (bertpipe's eval output for the same batches, through
frames2json) it also compares: the largest difference relative to the largest logit must be
<= 1e-4, else it exits 1. A BCE model's frames carry (0, x): x is compared.
"""
import json
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_peer import read_batches, tensor  # noqa: E402
from make_checkpoint_fixtures import read_safetensors  # noqa: E402
import variant_modules  # noqa: E402


def main():
    ckpt, batches_path, out = sys.argv[1:4]
    with open(os.path.join(ckpt, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    module, kind = variant_modules.build(cfg)
    state, _ = read_safetensors(os.path.join(ckpt, "model.safetensors"))
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    module.eval()
    _, batches = read_batches(batches_path)
    logits = {}
    with torch.no_grad():
        for batch in batches:
            b = {k: tensor(batch[k], torch.int32).long() for k in ("input_ids", "token_type_ids", "attention_mask")}
            rows = module(b)
            for i, (example_id, window) in enumerate(zip(batch["example_ids"], batch["windows"])):
                key = f"{example_id}/{window}"
                if kind == "qa":
                    keep = b["attention_mask"][i].bool()
                    logits[key] = rows[i][keep].reshape(-1).tolist()
                else:
                    logits[key] = rows[i].tolist()
    with open(out, "w", encoding="utf-8") as f:
        json.dump(logits, f)
    total = sum(p.numel() for p in module.parameters())
    print(f"variant_roundtrip: {type(module).__name__} loaded strict, {total} parameters, {len(logits)} rows")
    if len(sys.argv) > 4:
        sys.exit(compare(sys.argv[4], batches, logits, kind))


def compare(ours_path, batches, ref, kind):
    """max |ours - torch| / max |torch| over every row of every logits frame."""
    masks = {}
    for batch in batches:
        m = tensor(batch["attention_mask"], torch.int32).bool()
        for i, (e, w) in enumerate(zip(batch["example_ids"], batch["windows"])):
            masks[f"{e}/{w}"] = m[i]
    diff, scale, rows = 0.0, 0.0, 0
    with open(ours_path, encoding="utf-8") as f:
        for line in f:
            frame = json.loads(line)
            if frame["k"] != "logits":
                continue
            if kind == "qa":
                ours = torch.stack([tensor(frame["start_logits"], torch.float32), tensor(frame["end_logits"], torch.float32)], -1)
            else:
                ours = tensor(frame["logits"], torch.float32)
            for i, (e, w) in enumerate(zip(frame["example_ids"], frame["windows"])):
                key = f"{e}/{w}"
                want = torch.tensor(ref[key])
                got = ours[i][masks[key]].reshape(-1) if kind == "qa" else ours[i]
                if kind == "bce":
                    got = got[1:]
                diff = max(diff, float((got - want).abs().max()))
                scale = max(scale, float(want.abs().max()))
                rows += 1
    error = diff / scale if scale else diff
    print(f"variant_roundtrip: {rows} rows, largest difference {diff:.3g} of {scale:.3g} (relative {error:.2e})")
    return 0 if rows == len(ref) and error <= 1e-4 else 1


if __name__ == "__main__":
    main()
