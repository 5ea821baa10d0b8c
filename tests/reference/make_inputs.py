#!/usr/bin/python3
"""make_inputs.py — turn the real datasets into the JSONL that tokenize_ref.js and
tests/tools/tokenize_dump read (used by scripts/parity-tokenize and scripts/bench-tokenize).

  make_inputs.py squad DEV_JSON > pairs.jsonl   one line per question: id, question, context,
                                                and the first answer (answer_start, answer_text)
  make_inputs.py sst2 TSV... > singles.jsonl    one line per sentence (header skipped)
  make_inputs.py random SEED COUNT > mixed.jsonl  made-up texts and pairs (seeded, so repeatable)
                                                that stress what real data rarely has: controls,
                                                odd whitespace, combining marks, CJK, Hangul,
                                                emoji, special-token strings, 100+ char words
"""
import json
import random
import sys

# Character pools for the random texts (ASCII is drawn most often, like real text).
POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    " \t\n\r\x0b\x0c\x85\xa0\u2000\u2003\u3000\u200b\u2028",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u00bf\u00a1\u00ab\u00bb\u201c\u201d\u2018\u2019\u2014\u2013\u2026\u00b7",
    "\x00\x01\x07\x1f\x7f\ufffd\u00ad\u200d\ufeff\ue000",
    "\u00e9\u00e8\u00ea\u00eb\u00e0\u00e2\u00e4\u00ee\u00ef\u00f4\u00f6\u00fb\u00fc\u00e7\u00f1\u00c9\u00c8\u00c0"
    "\u00c7\u00d1\u00df\u00f8\u00e5\u00e6\u0153\u0130\u0131\u01c5\u01c8\ufb01\ufb02",
    "\u0300\u0301\u0308\u0327\u0903\u093f",
    "\u6771\u4eac\u5317\u6f22\u5b57\u65e5\u672c\u8a9e\u4e2d\u6587\ud55c\uad6d\uc5b4\u3072\u3089\u30ab\u30bf",
    "\U0001f642\U0001f680\U0001f97a\U0001f44d\U0001f3fd\U0001f917\U0001d400\u1fef\u037e\u2126\u212b",
    "\u03b1\u03b2\u03b3\u03a3\u03c3\u03c2\u03a9\u0414\u0436\u042f\u0627\u0644\u0639",
]
WORDS = ["the", "[MASK]", "[SEP]", "[CLS]", "[PAD]", "[UNK]", "[mask]", "unaffable", "running",
         "x" * 101, "\u00e9" * 50, "supercalifragilistic", "Paris", "don't"]


def random_text(rng, length):
    out = []
    for _ in range(length):
        r = rng.random()
        if r < 0.15:
            out.append(rng.choice(WORDS))
        else:
            pool = POOLS[0] if r < 0.55 else POOLS[1] if r < 0.7 else rng.choice(POOLS)
            out.append(rng.choice(pool))
    return "".join(out)


def mixed(seed, count):
    rng = random.Random(seed)
    for i in range(count):
        if i % 2:
            print(json.dumps({"id": f"r{i}", "text": random_text(rng, rng.randint(0, 200))}))
            continue
        context = random_text(rng, rng.randint(0, 1500))
        start = rng.randint(0, max(0, len(context) - 5))
        answer = context[start:start + rng.randint(1, 10)] or "x"
        print(json.dumps({"id": f"r{i}", "question": random_text(rng, rng.randint(0, 60)),
                          "context": context, "answer_start": start, "answer_text": answer}))


def squad(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)["data"]
    for article in data:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                line = {"id": qa["id"], "question": qa["question"], "context": context}
                if qa["answers"]:
                    line["answer_start"] = qa["answers"][0]["answer_start"]
                    line["answer_text"] = qa["answers"][0]["text"]
                print(json.dumps(line, ensure_ascii=False))


def sst2(paths):
    for path in paths:
        with open(path, encoding="utf-8", newline="\n") as f:
            header = f.readline().rstrip("\n").split("\t")
            column = header.index("sentence")
            for number, row in enumerate(f, start=2):
                fields = row.rstrip("\n").split("\t")
                print(json.dumps({"id": f"{path.rsplit('/', 1)[-1]}:{number}",
                                  "text": fields[column]}, ensure_ascii=False))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "squad":
        squad(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "sst2":
        sst2(sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "random":
        mixed(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit("usage: make_inputs.py squad DEV_JSON | sst2 TSV... | random SEED COUNT")
