#!/usr/bin/env python3
"""make_seeds.py — the seed corpora of the fuzz harnesses, made from the repository's own
fixtures (tests/fixtures, pipelines/default) and a few inputs written here.

    python3 tests/fuzz/make_seeds.py OUTDIR        (make fuzz uses build/fuzz/seeds)

writes OUTDIR/HARNESS/NAME for every harness in tests/fuzz/fuzz_*.c. Only the standard
library: zip, tar, gzip and bzip2 containers are packed here from the fixtures, the prefix
bytes the harnesses read options from are prepended, so each seed is a valid input that
reaches deep into its reader. Deterministic: the same tree gives the same seeds.
"""
import bz2
import gzip
import io
import json
import os
import struct
import sys
import tarfile
import zipfile

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIX = os.path.join(TOP, "tests", "fixtures")


def read(*parts):
    with open(os.path.join(*parts), "rb") as f:
        return f.read()


def gz(data):
    return gzip.compress(data, mtime=0)


def packed_tree(folder, kind):
    """FOLDER (a fixture tree) as a zip, tar or tar.gz, members in sorted order."""
    base = os.path.dirname(folder)
    names = []
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            names.append(os.path.relpath(os.path.join(root, name), base))
    out = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for name in names:
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                z.writestr(info, read(base, name), zipfile.ZIP_DEFLATED)
        return out.getvalue()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name in names:
            data = read(base, name)
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            t.addfile(info, io.BytesIO(data))
    return gz(out.getvalue()) if kind == "tar.gz" else out.getvalue()


def varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def masked_crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def tf_table_block(entries):
    """A LevelDB table block of (key, value) pairs, no prefix sharing, one restart."""
    out = bytearray()
    for key, value in entries:
        out += varint(0) + varint(len(key)) + varint(len(value)) + key + value
    return bytes(out) + struct.pack("<I", 0) + struct.pack("<I", 1)


def tf_framed(contents):
    """A block with its trailer: compression type 0 and the masked CRC32C."""
    return contents + b"\0" + struct.pack("<I", masked_crc32c(contents + b"\0"))


def tf_index(data_block, index_block):
    """A whole .index: the data block, an empty meta block, the index block, the footer."""
    index = bytearray(tf_framed(data_block))
    meta_handle = varint(len(index)) + varint(8)
    index += tf_framed(tf_table_block([]))
    index_handle = varint(len(index)) + varint(len(index_block))
    index += tf_framed(index_block)
    footer = meta_handle + index_handle
    return bytes(index + footer + b"\0" * (40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57))


def tf_index_naming_one_block_twice():
    """A TF checkpoint index whose index block names its one data block 200 times: 20
    variables seen 4,000 times. tfckpt.c once sized its tensor table by the file (len / 3)
    and wrote past it; keys must now strictly increase, so the second visit is an error."""
    block = tf_table_block

    # BundleEntryProto: dtype 1 (float), shape [1], offset 0, size 4.
    entry = varint(1 << 3) + varint(1) + varint(2 << 3 | 2) + varint(4) + varint(2 << 3 | 2) + varint(2) + \
        varint(1 << 3) + varint(1) + varint(4 << 3) + varint(0) + varint(5 << 3) + varint(4)
    data_block = block([(b"k%03d" % i, entry) for i in range(20)])
    handle = varint(0) + varint(len(data_block))
    return tf_index(data_block, block([(b"k%03d" % 19, handle)] * 200))


def tf_index_empty_kernel(rows=1 << 40):
    """A TF index with one kernel of shape [2^40, 0]: no bytes (size 0), but tfckpt.c's
    transpose once walked its 2^40 empty rows, a hang on a 130-byte file."""
    def dim(n):
        return varint(2 << 3 | 2) + varint(len(varint(1 << 3) + varint(n))) + varint(1 << 3) + varint(n)
    shape = dim(rows) + dim(0)
    # BundleEntryProto: dtype 1 (float), shape [rows, 0], offset 0, size 0.
    entry = varint(1 << 3) + varint(1) + varint(2 << 3 | 2) + varint(len(shape)) + shape + \
        varint(4 << 3) + varint(0) + varint(5 << 3) + varint(0)
    data_block = tf_table_block([(b"bert/pooler/dense/kernel", entry)])
    handle = varint(0) + varint(len(data_block))
    return tf_index(data_block, tf_table_block([(b"bert/pooler/dense/kernel", handle)]))


def torch_legacy_expanded(numel=1 << 30):
    """A legacy torch.save file whose one tensor is a stride-0 view of NUMEL elements over a
    one-float storage: torchbin.c once copied it into C order, a 4 GiB malloc from 200 bytes."""
    def text(s):
        return b"X" + struct.pack("<I", len(s)) + s.encode()
    count = numel.to_bytes((numel.bit_length() + 8) // 8, "little")
    magic = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
    state = b"\x80\x02}(" + text("w") + b"ctorch._utils\n_rebuild_tensor_v2\n((" + text("storage") + \
        b"ctorch\nFloatStorage\n" + text("0") + text("cpu") + b"K\x01tQK\x00(\x8a" + bytes([len(count)]) + count + \
        b"t(K\x00t\x89)tRu."
    keys = b"\x80\x02](" + text("0") + b"e."
    return magic + b"\x80\x02M\xe9\x03." + b"\x80\x02}." + state + keys + struct.pack("<Qf", 1, 1.5)


def configs():
    small = {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "vocab_size": 12,
             "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
             "hidden_act": "gelu", "max_position_embeddings": 6, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
             "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02,
             "id2label": {"0": "negative", "1": "positive"}, "label2id": {"negative": 0, "positive": 1},
             "problem_type": None, "classifier_dropout": None, "pad_token_id": 0}
    google = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
              "hidden_size": 128, "initializer_range": 0.02, "intermediate_size": 512,
              "max_position_embeddings": 512, "num_attention_heads": 2, "num_hidden_layers": 2,
              "type_vocab_size": 2, "vocab_size": 30522}
    return {"hf.json": json.dumps(small, indent=2).encode(), "google.json": json.dumps(google).encode(),
            "labels-only.json": b'{"num_labels": 3}'}


def tokenizer_inputs():
    """Header bytes (see fuzz_tokenizer.c) + our sentences and question/context pairs."""
    seeds = {}
    with open(os.path.join(FIX, "tokenize", "sentences.jsonl"), encoding="utf-8") as f:
        for i, line in enumerate(f):
            row = json.loads(line)
            if "text" in row:
                seeds[f"single-{i}"] = bytes([2 | (i & 4), 24, 6, 0, 0]) + row["text"].encode()
            elif "question" in row:
                answer = row.get("answer_text", "") or ""
                start = row.get("answer_start", 0) or 0
                body = (row["question"] + "\n" + row["context"]).encode()
                seeds[f"pair-{i}"] = bytes([1 | 2 | 8 | (i & 4), 24, 6, min(start, 255),
                                            min(len(answer.encode()), 255)]) + body
    return seeds


def frame_vectors(ext):
    """The protocol's test vectors (proto/vectors, made by tests/reference/make_vectors.py),
    good and bad, as frames (.msgpack) or JSON lines (.json)."""
    folder = os.path.join(TOP, "proto", "vectors")
    return {n: read(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(ext)}


# fuzz_stage_inputs: the reader a vector goes to (its first byte) and that reader's option byte
STAGE_INPUTS = {
    "example-cls": (0, 2), "example-sst-score": (0, 0), "example-qa": (1, 0),
    "feature-cls": (2, 1), "feature-qa": (2, 6), "feature-dtypes": (2, 0),
    "logits-cls": (3, 0), "logits-qa": (4, 0),
    "prediction-cls": (5, 0), "prediction-qa": (6, 0),
    "batch-cls": (7, 2), "batch-cls-eval": (7, 0x80),
}


def stage_inputs():
    folder = os.path.join(TOP, "proto", "vectors")
    seeds = {}
    for name, (which, option) in STAGE_INPUTS.items():
        vector = name[:-len("-eval")] if name.endswith("-eval") else name
        seeds[name] = bytes([which, option]) + read(folder, vector + ".msgpack")
    return seeds


def make(out):
    ck = os.path.join(FIX, "ckpt")
    ds = os.path.join(FIX, "datasets")
    seeds = {
        "fuzz_safetensors": {n: read(ck, n) for n in ("model.safetensors", "model_l2.safetensors")},
        "fuzz_torchbin": {n: read(ck, n) for n in ("pytorch_model.bin", "pytorch_model_p4.bin",
                                                   "pytorch_model_legacy.bin", "pytorch_model_legacy_l2.bin")}
        | {"legacy-expanded.bin": torch_legacy_expanded()},
        "fuzz_tfckpt": {"bert_model.ckpt.index": read(ck, "tf", "bert_model.ckpt.index"),
                        "one-block-twice.index": tf_index_naming_one_block_twice(),
                        "empty-kernel.index": tf_index_empty_kernel()},
        "fuzz_hfconfig": configs(),
        "fuzz_vocab": {"uncased.txt": read(FIX, "tokenize", "vocab-uncased.txt"),
                       "cased.txt": read(FIX, "tokenize", "vocab-cased.txt"),
                       "default.txt": read(TOP, "pipelines", "default", "vocab.txt")},
        "fuzz_csv": {"reviews.csv": bytes([0x04]) + read(ds, "reviews.csv"),
                     "train.tsv": bytes([0x01]) + read(ds, "SST-2", "train.tsv"),
                     "dev-sst2.tsv": bytes([0x81]) + read(ds, "SST-2", "dev.tsv"),
                     "test-noheader.tsv": bytes([0x03]) + read(ds, "SST-2", "test.tsv"),
                     "split.csv": bytes([0x14]) + read(ds, "reviews.csv")},
        "fuzz_squad": {"v1.json": read(ds, "squad_v1.json"), "v2.json": read(ds, "squad_v2.json"),
                       "tiny-v1.json": read(FIX, "squad", "tiny-v1.json")},
        "fuzz_ptb": {n: read(ds, "sst_trees", "trees", n) for n in ("train.txt", "dev.txt", "test.txt")},
        "fuzz_archive": {"imdb.tar": packed_tree(os.path.join(ds, "aclImdb"), "tar"),
                         "imdb.tar.gz": packed_tree(os.path.join(ds, "aclImdb"), "tar.gz"),
                         "sst2.zip": packed_tree(os.path.join(ds, "SST-2"), "zip"),
                         "reviews.csv.gz": gz(read(ds, "reviews.csv")),
                         "reviews.csv.bz2": bz2.compress(read(ds, "reviews.csv")),
                         "dev.tsv": read(ds, "SST-2", "dev.tsv")},
        "fuzz_tokenizer": tokenizer_inputs(),
        "fuzz_frame": frame_vectors(".msgpack"),
        "fuzz_json2frames": frame_vectors(".json"),
        "fuzz_stage_inputs": stage_inputs(),
    }
    harnesses = sorted(f[:-2] for f in os.listdir(os.path.join(TOP, "tests", "fuzz"))
                       if f.startswith("fuzz_") and f.endswith(".c"))
    for harness in harnesses:
        folder = os.path.join(out, harness)
        os.makedirs(folder, exist_ok=True)
        for name, data in seeds.get(harness, {}).items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        print(f"{harness}: {len(seeds.get(harness, {}))} seeds")


if __name__ == "__main__":
    make(sys.argv[1] if len(sys.argv) > 1 else os.path.join(TOP, "build", "fuzz", "seeds"))
