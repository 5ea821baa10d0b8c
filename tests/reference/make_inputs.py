#!/usr/bin/python3
"""make_inputs.py — turn the real datasets into the JSONL that tokenize_ref.js and
tests/tools/tokenize_dump read (used by scripts/parity-tokenize and scripts/bench-tokenize).

  make_inputs.py squad DEV_JSON > pairs.jsonl   one line per question: id, question, context,
                                                and the first answer (answer_start, answer_text)
  make_inputs.py sst2 TSV... > singles.jsonl    one line per sentence (header skipped)
"""
import json
import sys


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
    else:
        sys.exit("usage: make_inputs.py squad DEV_JSON | sst2 TSV...")
