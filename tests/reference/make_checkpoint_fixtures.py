#!/usr/bin/python3
"""make_checkpoint_fixtures.py — the reference for bertpipe's checkpoint readers and writer.

Run with Debian's python3-torch (no transformers, no safetensors package needed):

    /usr/bin/python3 tests/reference/make_checkpoint_fixtures.py [OUTDIR]
        writes OUTDIR (default tests/fixtures/ckpt) from a tiny seeded state dict with
        Hugging Face BERT parameter names:
          pytorch_model.bin        torch.save zip, pickle protocol 2 (torch's default)
          pytorch_model_p4.bin     the same, pickle protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL)
          pytorch_model_legacy.bin torch's pre-1.6 non-zip format
          model.safetensors        written by write_safetensors() below
          expected.json            every tensor's dtype, shape and values

    /usr/bin/python3 tests/reference/make_checkpoint_fixtures.py --check FILE.safetensors [OUTDIR]
        reads FILE (e.g. one bertpipe's C writer produced) with read_safetensors() below,
        compares every tensor with OUTDIR/pytorch_model.bin loaded by torch.load, and checks
        FILE is byte-identical to what write_safetensors() makes of the same tensors, i.e. it
        has the safetensors library's layout. Exit 0 and "check: OK ..." on success.

The safetensors reader/writer here follow the published format: 8-byte little-endian header
length, compact JSON header ("__metadata__" first, then tensors sorted by descending dtype
alignment and then name, offsets contiguous from 0), padded with spaces to a multiple of 8.
"""
import collections
import json
import os
import struct
import sys

import torch

# Position in the safetensors dtype enumeration, which is ordered by alignment.
DTYPES = {
    "BOOL": (torch.bool, 0), "U8": (torch.uint8, 1), "I8": (torch.int8, 2),
    "I16": (torch.int16, 5), "F16": (torch.float16, 7), "BF16": (torch.bfloat16, 8),
    "I32": (torch.int32, 9), "F32": (torch.float32, 11), "F64": (torch.float64, 12),
    "I64": (torch.int64, 13),
}
NAME_OF = {torch_dtype: name for name, (torch_dtype, _) in DTYPES.items()}


def tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.numel() == 0:
        return b""
    # View as bytes whatever the dtype (numpy has no bfloat16).
    return t.view(-1).view(torch.uint8).numpy().tobytes()


def write_safetensors(path, tensors, metadata=None):
    metadata = dict(metadata or {})
    metadata.setdefault("format", "pt")
    order = sorted(tensors.items(), key=lambda kv: (-DTYPES[NAME_OF[kv[1].dtype]][1], kv[0]))
    header = {"__metadata__": {k: metadata[k] for k in sorted(metadata)}}
    blobs, offset = [], 0
    for name, t in order:
        blob = tensor_bytes(t)
        header[name] = {"dtype": NAME_OF[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    data = raw[8 + n:]
    tensors, end = {}, 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        begin, stop = info["data_offsets"]
        assert begin == end, f"{name}: offsets not contiguous"
        end = stop
        dtype = DTYPES[info["dtype"]][0]
        chunk = bytearray(data[begin:stop])
        t = torch.frombuffer(chunk, dtype=torch.uint8).view(dtype) if chunk else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(info["shape"]).clone()
    assert end == len(data), "data section size does not match the header"
    return tensors, metadata


def make_state_dict():
    """A tiny BertForSequenceClassification-like state dict (H=8, vocab 12, 3 labels) with the
    awkward cases a reader must handle: a transposed (non-contiguous) view, views at a storage
    offset sharing one storage, f16, bf16 and an i64 buffer."""
    g = torch.Generator().manual_seed(20261123)
    h, vocab = 8, 12
    # nn.Module.state_dict() returns an OrderedDict carrying per-module versions in
    # _metadata; pickling it adds a BUILD and nested dicts the reader must get through.
    sd = collections.OrderedDict()
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("bert", {"version": 1}),
                                            ("bert.embeddings", {"version": 1})])
    sd["bert.embeddings.word_embeddings.weight"] = torch.randn(vocab, h, generator=g)
    sd["bert.embeddings.position_embeddings.weight"] = torch.randn(6, h, generator=g)
    sd["bert.embeddings.token_type_embeddings.weight"] = torch.randn(2, h, generator=g).to(torch.bfloat16)
    sd["bert.embeddings.LayerNorm.weight"] = 1 + 0.1 * torch.randn(h, generator=g)
    sd["bert.embeddings.LayerNorm.bias"] = 0.1 * torch.randn(h, generator=g)
    sd["bert.embeddings.position_ids"] = torch.arange(6, dtype=torch.int64).unsqueeze(0)
    # Stored transposed: strides (1, 8), the pickle must be read with its strides.
    sd["bert.encoder.layer.0.attention.self.query.weight"] = torch.randn(h, h, generator=g).t()
    # Two biases cut from one storage at offsets 2 and 10.
    packed = torch.randn(2 + 2 * h, generator=g)
    sd["bert.encoder.layer.0.attention.self.query.bias"] = packed[2:2 + h]
    sd["bert.encoder.layer.0.attention.self.key.bias"] = packed[2 + h:2 + 2 * h]
    sd["bert.pooler.dense.weight"] = torch.randn(h, h, generator=g).to(torch.float16)
    sd["bert.pooler.dense.bias"] = torch.zeros(h)
    sd["classifier.weight"] = 0.02 * torch.randn(3, h, generator=g)
    sd["classifier.bias"] = torch.zeros(3)
    return sd


def expected_json(sd):
    out = {"generator": "tests/reference/make_checkpoint_fixtures.py", "tensors": {}}
    for name, t in sd.items():
        values = t.contiguous().reshape(-1)
        values = values.tolist() if t.dtype == torch.int64 else values.to(torch.float64).tolist()
        out["tensors"][name] = {"dtype": NAME_OF[t.dtype], "shape": list(t.shape), "values": values}
    return out


def make(outdir):
    os.makedirs(outdir, exist_ok=True)
    sd = make_state_dict()
    torch.save(sd, os.path.join(outdir, "pytorch_model.bin"))
    torch.save(sd, os.path.join(outdir, "pytorch_model_p4.bin"), pickle_protocol=4)
    torch.save(sd, os.path.join(outdir, "pytorch_model_legacy.bin"), _use_new_zipfile_serialization=False)
    write_safetensors(os.path.join(outdir, "model.safetensors"),
                      {k: v.contiguous() for k, v in sd.items()}, {"written_by": "make_checkpoint_fixtures.py"})
    with open(os.path.join(outdir, "expected.json"), "w") as f:
        json.dump(expected_json(sd), f, indent=0)
        f.write("\n")
    # Our own writer must read back exactly.
    back, _ = read_safetensors(os.path.join(outdir, "model.safetensors"))
    for name, t in sd.items():
        assert torch.equal(back[name], t.contiguous()), name
    print(f"wrote {outdir}: {len(sd)} tensors")


def check(path, outdir):
    tensors, metadata = read_safetensors(path)
    reference = torch.load(os.path.join(outdir, "pytorch_model.bin"))
    missing = sorted(set(reference) - set(tensors))
    extra = sorted(set(tensors) - set(reference))
    if missing or extra:
        sys.exit(f"check: FAIL missing {missing} unexpected {extra}")
    for name, want in reference.items():
        got = tensors[name]
        if got.dtype != want.dtype or list(got.shape) != list(want.shape) or not torch.equal(got, want):
            sys.exit(f"check: FAIL tensor {name} differs")
    remade = path + ".python"
    write_safetensors(remade, tensors, metadata)
    with open(path, "rb") as a, open(remade, "rb") as b:
        same = a.read() == b.read()
    os.unlink(remade)
    if not same:
        sys.exit("check: FAIL file is not byte-identical to the reference layout")
    print(f"check: OK {len(tensors)} tensors equal to pytorch_model.bin, layout byte-identical, "
          f"metadata {json.dumps(metadata, sort_keys=True)}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--check"]:
        check(args[1], args[2] if len(args) > 2 else "tests/fixtures/ckpt")
    else:
        make(args[0] if args else "tests/fixtures/ckpt")
