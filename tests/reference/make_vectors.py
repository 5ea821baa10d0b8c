#!/usr/bin/python3
"""make_vectors.py - write the protocol-v1 test vectors in proto/vectors/.

For every frame below it writes NAME.json (the one canonical JSON line frames2json prints)
and NAME.msgpack (the frame's bytes).  The MessagePack bytes come from the small encoder in
this file, written from the MessagePack specification and NOT from bertpipe's C code, so the
C codec (common/wire/frame.c, common/wire/framejson.c) is checked against an independent implementation
by tests/unit/test_frame.c.  It also writes bad-*.msgpack frames that every reader must refuse,
with the expected error text in bad-*.expect.

Canonical rules shared with the C writer (proto/frames.md, "Canonical encoding"):
  * integers, strings, arrays, maps and bins use their smallest header;
  * every float is a float64;
  * map keys keep the order given;
  * in JSON a float always shows a '.' or an exponent: the shortest "%.Ng" (N = 1..17) that
    reads back to the same double, with ".0" added when it shows neither; a bin is
    {"$bin": BASE64}; an infinity is {"$float": "inf"} / {"$float": "-inf"}; an unsigned
    integer above 2^63-1 is {"$u64": "DECIMAL"}.

Run: /usr/bin/python3 tests/reference/make_vectors.py  (from the repository root)
"""
import base64
import math
import os
import struct
import sys


class Bin(bytes):
    """A MessagePack bin value (Python bytes would be ambiguous with str in JSON)."""


class Raw(bytes):
    """MessagePack bytes already encoded, written as they are (a map a dict cannot hold)."""


# ---- MessagePack encoder ------------------------------------------------------------

def enc_int(n):
    if 0 <= n <= 0x7F:
        return bytes([n])
    if -32 <= n < 0:
        return bytes([n & 0xFF])
    if n > 0:
        for tag, fmt, top in ((0xCC, ">B", 0xFF), (0xCD, ">H", 0xFFFF),
                              (0xCE, ">I", 0xFFFFFFFF), (0xCF, ">Q", 2**64 - 1)):
            if n <= top:
                return bytes([tag]) + struct.pack(fmt, n)
    for tag, fmt, low in ((0xD0, ">b", -2**7), (0xD1, ">h", -2**15),
                          (0xD2, ">i", -2**31), (0xD3, ">q", -2**63)):
        if n >= low:
            return bytes([tag]) + struct.pack(fmt, n)
    raise ValueError("integer out of range: %d" % n)


def enc_len(n, fix_base, fix_max, tags):
    """Header for a length: the fix form when it fits, else the 8/16/32-bit tag that fits."""
    if fix_base is not None and n <= fix_max:
        return bytes([fix_base | n])
    for tag, fmt, top in tags:
        if tag is not None and n <= top:
            return bytes([tag]) + struct.pack(fmt, n)
    raise ValueError("too long: %d" % n)


STR_TAGS = ((0xD9, ">B", 0xFF), (0xDA, ">H", 0xFFFF), (0xDB, ">I", 0xFFFFFFFF))
BIN_TAGS = ((0xC4, ">B", 0xFF), (0xC5, ">H", 0xFFFF), (0xC6, ">I", 0xFFFFFFFF))
ARR_TAGS = ((0xDC, ">H", 0xFFFF), (0xDD, ">I", 0xFFFFFFFF))
MAP_TAGS = ((0xDE, ">H", 0xFFFF), (0xDF, ">I", 0xFFFFFFFF))


def encode(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        return enc_int(v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, Raw):
        return bytes(v)
    if isinstance(v, Bin):
        return enc_len(len(v), None, 0, BIN_TAGS) + bytes(v)
    if isinstance(v, str):
        b = v.encode("utf-8")
        return enc_len(len(b), 0xA0, 31, STR_TAGS) + b
    if isinstance(v, list):
        return enc_len(len(v), 0x90, 15, ARR_TAGS) + b"".join(encode(x) for x in v)
    if isinstance(v, dict):
        out = [enc_len(len(v), 0x80, 15, MAP_TAGS)]
        for k, x in v.items():
            out.append(encode(k))
            out.append(encode(x))
        return b"".join(out)
    raise TypeError(type(v))


# ---- canonical JSON -----------------------------------------------------------------

def json_float(d):
    if math.isinf(d):
        return '{"$float":"%s"}' % ("inf" if d > 0 else "-inf")
    for prec in range(1, 18):
        text = "%.*g" % (prec, d)
        if float(text) == d:
            break
    if not any(c in text for c in ".eEn"):
        text += ".0"
    return text


SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r",
                 "\b": "\\b", "\f": "\\f"}


def json_str(s):
    out = ['"']
    for c in s:
        if c in SHORT_ESCAPES:
            out.append(SHORT_ESCAPES[c])
        elif ord(c) < 0x20:
            out.append("\\u%04x" % ord(c))
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def to_json(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return '{"$u64":"%d"}' % v if v > 2**63 - 1 else str(v)
    if isinstance(v, float):
        return json_float(v)
    if isinstance(v, Bin):
        return '{"$bin":"%s"}' % base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, str):
        return json_str(v)
    if isinstance(v, list):
        return "[" + ",".join(to_json(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(json_str(k) + ":" + to_json(x) for k, x in v.items()) + "}"
    raise TypeError(type(v))


# ---- tensors ------------------------------------------------------------------------

DTYPE_FMT = {"f32": "<f", "f64": "<d", "i64": "<q", "i32": "<i", "i16": "<h", "i8": "<b",
             "u8": "<B", "bool": "<?", "f16": "<e"}


def tensor(dtype, shape, values):
    """{"dtype","shape","data"} with little-endian contiguous data; bf16 values are given as
    their raw 16-bit patterns (Python has no bf16 type)."""
    fmt = "<H" if dtype == "bf16" else DTYPE_FMT[dtype]
    count = 1
    for s in shape:
        count *= s
    assert count == len(values), (dtype, shape, len(values))
    data = b"".join(struct.pack(fmt, x) for x in values)
    return {"dtype": dtype, "shape": list(shape), "data": Bin(data)}


def i32(shape, values):
    return tensor("i32", shape, values)


def f32(shape, values):
    # Values are chosen exactly representable in f32, so the vector is readable as numbers.
    return tensor("f32", shape, values)


# ---- the vectors ----------------------------------------------------------------------

def frame(kind, **fields):
    d = {"v": 1, "k": kind}
    d.update(fields)
    return d


VECTORS = {
    "hello": frame("hello", **{"from": "tokenize"}, pid=4242, task="classification",
                   labels=["negative", "positive"], num_labels=2, max_length=128, stride=32,
                   lowercase=True, vocab_size=30522, split="train", source="sst2"),
    "hello-minimal": frame("hello", **{"from": "json2frames"}, pid=7),
    "example-cls": frame("example", seq=0, example_id="train-0", split="train",
                         text='A tiny "test" sentence,\tcafé and 🙂', label=1),
    "example-sst-score": frame("example", seq=3, example_id="train-3", split="train",
                               text="quietly good", label=-1, score=0.625),
    "example-qa": frame("example", seq=1, example_id="q-17", split="dev", title="Rivers",
                        question="Which river is longest?",
                        context="The Nile is long. The Amazon is longer, some say.",
                        answers=[{"text": "The Amazon", "answer_start": 18},
                                 {"text": "Amazon", "answer_start": 22}],
                        is_impossible=False),
    "feature-cls": frame("feature", seq=0, example_id="train-0", window=0,
                         input_ids=i32([5], [101, 1037, 4714, 3231, 102]),
                         token_type_ids=i32([5], [0, 0, 0, 0, 0]),
                         attention_mask=i32([5], [1, 1, 1, 1, 0]), label=1),
    "feature-qa": frame("feature", seq=2, example_id="q-17", window=1, example_seq=1,
                        input_ids=i32([4], [101, 2029, 102, 11014]),
                        token_type_ids=i32([4], [0, 0, 0, 1]),
                        attention_mask=i32([4], [1, 1, 1, 1]),
                        offsets=i32([4, 2], [-1, -1, -1, -1, -1, -1, 4, 8]),
                        start_position=3, end_position=3),
    "batch-cls": frame("batch", seq=0, epoch=1, example_ids=["train-0", "train-1"],
                       windows=i32([2], [0, 0]),
                       input_ids=i32([2, 3], [101, 1037, 102, 101, 2204, 102]),
                       token_type_ids=i32([2, 3], [0] * 6),
                       attention_mask=i32([2, 3], [1] * 6),
                       labels=i32([2], [1, 0])),
    "logits-cls": frame("logits", seq=0, example_ids=["train-0", "train-1"],
                        windows=i32([2], [0, 0]),
                        logits=f32([2, 2], [-1.5, 2.25, 0.5, -0.125]),
                        labels=i32([2], [1, 0])),
    "logits-qa": frame("logits", seq=5, example_ids=["q-17"], windows=i32([1], [1]),
                       start_logits=f32([1, 3], [0.0, -2.5, 7.75]),
                       end_logits=f32([1, 3], [1.0, 3.5, -0.25]),
                       offsets=i32([1, 3, 2], [-1, -1, 0, 3, 4, 8]),
                       start_positions=i32([1], [2]), end_positions=i32([1], [2])),
    "prediction-cls": frame("prediction", seq=0, example_id="dev-9", label=1,
                            probs=f32([2], [0.25, 0.75]), gold=-1),
    "prediction-qa": frame("prediction", seq=4, example_id="q-17", text="The Amazon",
                           score=8.3125, answers=["The Amazon", "Amazon"], span_match=True),
    "metric": frame("metric", seq=12, scope="train", step=100, epoch=1,
                    loss=0.6931471805599453, lr=5e-05, grad_norm=1.0, seq_per_s=123.4,
                    big=1.5e300, neg=-7),
    "metric-inf": frame("metric", seq=0, scope="eval", loss=math.inf, accuracy=100.0,
                        exact_match=1e16, f1=0.1),
    # integers at the edges of int64/uint64: above 2^63-1 the JSON form is {"$u64": "..."}
    "metric-u64": frame("metric", seq=1, scope="train", step=2**64 - 1, tokens=2**63,
                        last_signed=2**63 - 1, lowest=-2**63),
    "epoch": frame("epoch", seq=40, epoch=2),
    "eos": frame("eos", **{"from": "batch"}, count=41),
    "error": frame("error", **{"from": "train"},
                   message="tensor 'input_ids' has dtype f32, expected i32 (ipc://x)"),
    # every dtype name once, to pin the names and their element sizes
    "feature-dtypes": frame("feature", seq=0, example_id="dtypes", window=0,
                            f32=tensor("f32", [2], [1.0, -2.0]),
                            f64=tensor("f64", [1], [0.1]),
                            f16=tensor("f16", [2], [1.0, -0.5]),
                            bf16=tensor("bf16", [2], [0x3F80, 0xC000]),
                            i64=tensor("i64", [1], [-2**40]),
                            i16=tensor("i16", [2], [-300, 300]),
                            i8=tensor("i8", [2], [-128, 127]),
                            u8=tensor("u8", [3], [0, 128, 255]),
                            bool=tensor("bool", [2], [True, False]),
                            empty=tensor("i32", [0, 4], [])),
    # header sizes past the fix forms: str8, bin16, map16 (16+ fields), array16, int widths
    "wide-headers": dict([("v", 1), ("k", "metric"), ("seq", 65536),
                          ("s32", "x" * 32), ("s256", "y" * 256), ("arr16", list(range(16))),
                          ("u8", 200), ("u16", 60000), ("u32", 4000000000),
                          ("i8", -100), ("i16", -1000), ("i32", -100000), ("i64", -2**40),
                          ("u64", 2**62), ("n", None), ("b", False),
                          ("blob", Bin(bytes(range(256)) + b"\x01\x02"))]),
}

def encode_pairs(pairs):
    """A map from (key, value) pairs: how to write what a dict cannot hold (a key twice)."""
    return enc_len(len(pairs), 0x80, 15, MAP_TAGS) + b"".join(encode(k) + encode(x) for k, x in pairs)


def nested_arrays(depth):
    return [nested_arrays(depth - 1)] if depth > 0 else []


# Frames every reader must refuse, and the error text it gives (a substring of the message).
BAD = {
    "bad-truncated": (encode(VECTORS["hello-minimal"])[:-3], "malformed MessagePack: frame truncated"),
    "bad-not-map": (encode([1, 2]), "frame is not a map"),
    "bad-no-k": (encode({"v": 1}), "frame has no 'k' (kind)"),
    "bad-no-v": (encode({"k": "hello"}), "frame has no 'v' (protocol version)"),
    "bad-version2": (encode({"v": 2, "k": "hello"}), "unsupported protocol version 2 (this build speaks 1)"),
    "bad-unknown-kind": (encode({"v": 1, "k": "gossip"}), "unknown frame kind 'gossip'"),
    "bad-c1": (b"\x82\xa1v\x01\xa1k\xc1", "malformed MessagePack"),
    "bad-trailing": (encode({"v": 1, "k": "epoch"}) + b"\x00", "malformed frame: 1 trailing bytes after the map"),
    # 21 bytes whose last field claims 2^32-1 elements: a decoder that believed it would ask
    # for ~96 GiB before noticing the bytes are missing
    "bad-huge-array": (encode({"v": 1, "k": "hello", "ids": []})[:-1] + b"\xdd\xff\xff\xff\xff",
                       "malformed MessagePack: array at byte 16 announces 4294967295 elements, more than the frame can hold"),
    "bad-huge-map": (b"\x83\xa1v\x01\xa1k\xa5hello\xa1m\xdf\x40\x00\x00\x00",
                     "malformed MessagePack: map at byte 14 announces 1073741824 elements, more than the frame can hold"),
    "bad-too-deep": (encode({"v": 1, "k": "metric", "x": nested_arrays(16)}),
                     "malformed MessagePack: nested deeper than 16 levels"),
    # readers look fields up by name: a key twice would mean the first to one reader and the
    # last to another (a JSON round trip), so it is refused at every level
    "bad-duplicate-key": (encode_pairs([("v", 1), ("k", "feature"), ("label", 0), ("label", 1)]),
                          "frame has key 'label' twice"),
    "bad-duplicate-kind": (encode_pairs([("v", 1), ("k", "hello"), ("k", "eos")]), "frame has key 'k' twice"),
    "bad-duplicate-nested": (encode_pairs([("v", 1), ("k", "feature"),
                                           ("input_ids", {"dtype": "i32", "shape": [0], "data": Bin(b"")}),
                                           ("answers", [{"text": "a"}, Raw(encode_pairs([("text", "a"), ("text", "b")]))])]),
                             "frame field 'answers'[1] has key 'text' twice"),
    "bad-key-not-string": (encode_pairs([("v", 1), ("k", "hello"), (1, 2)]), "frame has a key that is not a string"),
    # strings are UTF-8, keys are names: what JSON carries, so record and replay stay the identity
    "bad-not-utf8": (encode_pairs([("v", 1), ("k", "example"), ("text", Raw(b"\xa3a\xffb"))]),
                     "frame field 'text' is a string that is not UTF-8 (byte 1)"),
    "bad-key-nul": (encode_pairs([("v", 1), ("k", "hello"), ("a\x00b", 1)]),
                    "frame has a key that is not a name (a NUL byte, or not UTF-8)"),
}


def main():
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = os.path.join(top, "proto", "vectors")
    os.makedirs(out, exist_ok=True)
    for name, v in VECTORS.items():
        with open(os.path.join(out, name + ".json"), "w", encoding="utf-8", newline="\n") as f:
            f.write(to_json(v) + "\n")
        with open(os.path.join(out, name + ".msgpack"), "wb") as f:
            f.write(encode(v))
    for name, (data, expect) in BAD.items():
        with open(os.path.join(out, name + ".msgpack"), "wb") as f:
            f.write(data)
        with open(os.path.join(out, name + ".expect"), "w") as f:
            f.write(expect + "\n")
    print("wrote %d vectors and %d invalid frames to %s" % (len(VECTORS), len(BAD), out), file=sys.stderr)


if __name__ == "__main__":
    main()
