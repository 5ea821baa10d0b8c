#!/usr/bin/python3
"""make_checkpoint_fixtures.py — the reference for bertpipe's checkpoint readers and writer.

Run with Debian's python3-torch (no transformers, no safetensors package needed):

    /usr/bin/python3 tests/reference/make_checkpoint_fixtures.py [OUTDIR]
        writes OUTDIR (default tests/fixtures/ckpt) from a tiny seeded state dict with
        Hugging Face BERT parameter names:
          pytorch_model.bin        torch.save zip, pickle protocol 2 (torch's default)
          pytorch_model_p4.bin     the same, pickle protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL)
          pytorch_model_legacy.bin torch's pre-1.6 non-zip format
          pytorch_model_legacy_l2.bin, model_l2.safetensors
                                   a 2-layer tiny BERT (41 tensors, each its own storage) in
                                   the legacy format and as its safetensors twin: more than
                                   16 storages, so the reader's storage table must grow
          model.safetensors        written by write_safetensors() below
          tf/bert_model.ckpt.{index,data-00000-of-00001}
                                   the bert.* tensors as Google's TF checkpoints hold them
                                   (TF names, [in, out] kernels, plus cls/ heads, global_step
                                   and an optimizer slot to be skipped), written by
                                   write_tf_checkpoint() below
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


def crc32c(data):
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_varint_field(number, value):
    return varint(number << 3) + varint(value)


def pb_bytes_field(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


TF_DTYPES = {torch.float32: 1, torch.float64: 2, torch.int32: 3, torch.int64: 9, torch.bfloat16: 14, torch.float16: 19}


def table_block(entries, restart_interval):
    """A LevelDB table block: prefix-compressed keys, restart points, count."""
    out, restarts, last = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(last)) and key[shared] == last[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        last = key
    for r in restarts or [0]:
        out += struct.pack("<I", r)
    out += struct.pack("<I", len(restarts or [0]))
    return bytes(out)


def write_tf_checkpoint(prefix, variables):
    """TensorFlow's tensor bundle: PREFIX.data-00000-of-00001 holds the raw tensors, PREFIX.index
    is a table (uncompressed, several small data blocks so that prefix compression, restarts and
    the index block are all exercised) from variable name to BundleEntryProto."""
    data, entries = bytearray(), []
    # Header: num_shards 1, version { producer 1 }.
    entries.append((b"", pb_varint_field(1, 1) + pb_bytes_field(3, pb_varint_field(1, 1))))
    for name in sorted(variables):
        t = variables[name]
        blob = tensor_bytes(t)
        shape = b"".join(pb_bytes_field(2, pb_varint_field(1, d)) for d in t.shape)
        entry = (pb_varint_field(1, TF_DTYPES[t.dtype]) + pb_bytes_field(2, shape) + pb_varint_field(4, len(data))
                 + pb_varint_field(5, len(blob)) + varint(6 << 3 | 5) + struct.pack("<I", masked_crc32c(blob)))
        entries.append((name.encode(), entry))
        data += blob
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(data)
    index, handles = bytearray(), []

    def put_block(contents):
        offset = len(index)
        index.extend(contents + b"\0" + struct.pack("<I", masked_crc32c(contents + b"\0")))
        return varint(offset) + varint(len(contents))

    for start in range(0, len(entries), 5):
        chunk = entries[start:start + 5]
        handles.append((chunk[-1][0], put_block(table_block(chunk, 3))))
    meta_handle = put_block(table_block([], 1))
    index_handle = put_block(table_block(handles, 1))
    footer = meta_handle + index_handle
    index += footer + b"\0" * (40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57)
    with open(prefix + ".index", "wb") as f:
        f.write(index)


def tf_variables(sd):
    """The bert.* tensors under the names and layout of Google's TF checkpoints."""
    out = {}
    for name, t in sd.items():
        if not name.startswith("bert.") or name.endswith("position_ids"):
            continue
        parts = name.split(".")
        tf = []
        for i, part in enumerate(parts):
            if part.isdigit():
                tf[-1] += "_" + part
            elif i == len(parts) - 1:
                if parts[-2].endswith("_embeddings"):
                    break
                tf.append({"weight": "gamma" if parts[-2] == "LayerNorm" else "kernel",
                           "bias": "beta" if parts[-2] == "LayerNorm" else "bias"}[part])
            else:
                tf.append(part)
        if tf[-1] == "kernel":
            t = t.t()
        out["/".join(tf)] = t.contiguous()
    g = torch.Generator().manual_seed(7)
    out["cls/seq_relationship/output_weights"] = torch.randn(2, 8, generator=g)
    out["cls/seq_relationship/output_bias"] = torch.randn(2, generator=g)
    out["bert/embeddings/word_embeddings/adam_m"] = torch.zeros(12, 8)
    out["global_step"] = torch.tensor(1000, dtype=torch.int64)
    return out


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


def make_two_layer_state_dict():
    """A tiny 2-layer BertForSequenceClassification state dict (H=8, I=16, vocab 12, 6
    positions, 2 labels) under Hugging Face's names: 41 tensors, each in its own storage, the
    shape of the many older hub checkpoints saved in the legacy format."""
    g = torch.Generator().manual_seed(20261201)
    h, inner, vocab = 8, 16, 12
    sd = collections.OrderedDict()
    sd["bert.embeddings.word_embeddings.weight"] = torch.randn(vocab, h, generator=g)
    sd["bert.embeddings.position_embeddings.weight"] = torch.randn(6, h, generator=g)
    sd["bert.embeddings.token_type_embeddings.weight"] = torch.randn(2, h, generator=g)
    sd["bert.embeddings.LayerNorm.weight"] = 1 + 0.1 * torch.randn(h, generator=g)
    sd["bert.embeddings.LayerNorm.bias"] = 0.1 * torch.randn(h, generator=g)
    for layer in range(2):
        p = f"bert.encoder.layer.{layer}."
        for name, rows, cols in [("attention.self.query", h, h), ("attention.self.key", h, h),
                                 ("attention.self.value", h, h), ("attention.output.dense", h, h),
                                 ("intermediate.dense", inner, h), ("output.dense", h, inner)]:
            sd[p + name + ".weight"] = 0.2 * torch.randn(rows, cols, generator=g)
            sd[p + name + ".bias"] = 0.1 * torch.randn(rows, generator=g)
            if name in ("attention.output.dense", "output.dense"):
                norm = p + name.rsplit(".", 1)[0] + ".LayerNorm"
                sd[norm + ".weight"] = 1 + 0.1 * torch.randn(h, generator=g)
                sd[norm + ".bias"] = 0.1 * torch.randn(h, generator=g)
    sd["bert.pooler.dense.weight"] = 0.2 * torch.randn(h, h, generator=g)
    sd["bert.pooler.dense.bias"] = torch.zeros(h)
    sd["classifier.weight"] = 0.02 * torch.randn(2, h, generator=g)
    sd["classifier.bias"] = torch.zeros(2)
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
    two_layers = make_two_layer_state_dict()
    torch.save(two_layers, os.path.join(outdir, "pytorch_model_legacy_l2.bin"), _use_new_zipfile_serialization=False)
    write_safetensors(os.path.join(outdir, "model_l2.safetensors"), two_layers,
                      {"written_by": "make_checkpoint_fixtures.py"})
    assert len(two_layers) > 16
    tf = tf_variables(sd)
    os.makedirs(os.path.join(outdir, "tf"), exist_ok=True)
    write_tf_checkpoint(os.path.join(outdir, "tf", "bert_model.ckpt"), tf)
    expected = expected_json(sd)
    expected["tf_only"] = {  # what the TF checkpoint adds, under transformers' names
        "cls.seq_relationship.weight": tf["cls/seq_relationship/output_weights"].reshape(-1).tolist(),
        "cls.seq_relationship.bias": tf["cls/seq_relationship/output_bias"].tolist(),
    }
    with open(os.path.join(outdir, "expected.json"), "w") as f:
        json.dump(expected, f, indent=0)
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
