#!/usr/bin/python3
"""checkpoint_roundtrip.py — a bertpipe checkpoint through PyTorch and back.

    /usr/bin/python3 tests/reference/checkpoint_roundtrip.py CKPT_DIR BATCHES.jsonl OUT_DIR

Loads CKPT_DIR/model.safetensors (as bertpipe's train saved it) into the reference model of
finetune_peer.py, computes eval-mode logits for every batch frame of BATCHES.jsonl (recorded
with frames2json) and writes them to OUT_DIR/reference-logits.json as {example_id: [...]}.
Then writes the same weights with torch.save as OUT_DIR/torchsave/pytorch_model.bin, beside
copies of config.json and vocab.txt, so bertpipe can be checked to load torch's format too.
"""
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_peer import forward, read_batches  # noqa: E402
from make_checkpoint_fixtures import read_safetensors  # noqa: E402


def main():
    ckpt, batches_path, out = sys.argv[1:4]
    with open(os.path.join(ckpt, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    params, _ = read_safetensors(os.path.join(ckpt, "model.safetensors"))
    params = {k: v.float() for k, v in params.items()}
    head = "qa" if "qa_outputs.weight" in params else "cls"
    _, batches = read_batches(batches_path)
    logits = {}
    with torch.no_grad():
        for batch in batches:
            out_logits, _ = forward(params, cfg, batch, head, 0.0, False)
            rows = out_logits if head == "cls" else torch.stack(out_logits, dim=-1)
            for i, example_id in enumerate(batch["example_ids"]):
                logits[example_id] = rows[i].reshape(-1).tolist()
    os.makedirs(os.path.join(out, "torchsave"), exist_ok=True)
    with open(os.path.join(out, "reference-logits.json"), "w", encoding="utf-8") as f:
        json.dump(logits, f)
    torch.save({k: v.contiguous() for k, v in params.items()}, os.path.join(out, "torchsave", "pytorch_model.bin"))
    for name in ("config.json", "vocab.txt"):
        shutil.copy(os.path.join(ckpt, name), os.path.join(out, "torchsave", name))
    print(f"checkpoint_roundtrip: {len(logits)} rows of reference logits, {len(params)} tensors saved with torch.save")


if __name__ == "__main__":
    main()
