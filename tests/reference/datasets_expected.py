#!/usr/bin/python3
"""Expected examples for tests/unit/test_datasets.c, computed the way Hugging Face does.

Reads the hand-written fixtures in tests/fixtures/datasets/ with Python's own csv and json
modules, following the rules of the Hugging Face `datasets` loaders that bertpipe copies:
  - sst (ptb trees): root label; text = leaves joined by " ", -LRB-/-RRB- -> ( ) and
    \\/ \\* -> / * (the PTB escapes, undone as in GLUE SST-2's sentences); binary
    as GLUE SST-2 (drop 2; 0,1 -> 0; 3,4 -> 1)
  - sst (default config): the byte repair of datasetSentences, the -LRB-/-RRB- swap, the
    score looked up through dictionary.txt + sentiment_labels.txt; splits 1 train, 3 dev,
    2 test; binary = Python round(score)
  - glue/sst2: csv.DictReader(delimiter="\\t", quoting=csv.QUOTE_NONE), text kept as is,
    idx = row number, label -1 when the file has no label column
  - imdb: SPLIT/{neg,pos}/*.txt, neg = 0, pos = 1, sorted by path
  - csv: csv.DictReader defaults (RFC 4180), a label map value -> index
  - squad: json, answer_start checked by Python string slicing (code points)
and writes one JSONL file per case into tests/fixtures/datasets/expected/.

Run from the repository root:  /usr/bin/python3 tests/reference/datasets_expected.py
Standard library only.
"""
import csv
import json
import os
import re

ROOT = "tests/fixtures/datasets"
OUT = os.path.join(ROOT, "expected")


def write(name, examples):
    with open(os.path.join(OUT, name + ".jsonl"), "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")


def tree_leaves_and_label(tree):
    tokens = re.findall(r"\(|\)|[^\s()]+", tree)
    root = int(tokens[1])
    leaves = []
    for i, t in enumerate(tokens):
        # A leaf is a word that follows a label (not an opening bracket) and precedes ")".
        if t not in "()" and tokens[i - 1] not in "(" and tokens[i + 1] == ")":
            leaves.append({"-LRB-": "(", "-RRB-": ")"}.get(t, t).replace("\\/", "/").replace("\\*", "*"))
    return " ".join(leaves), root


def sst_trees(split, binary):
    out = []
    with open(os.path.join(ROOT, "sst_trees/trees", split + ".txt"), encoding="utf-8") as f:
        for n, line in enumerate(f):
            text, label = tree_leaves_and_label(line.strip())
            if binary:
                if label == 2:
                    continue
                label = 0 if label < 2 else 1
            out.append({"id": str(n), "text": text, "label": label})
    return out


def sst_raw(split_code, binary):
    base = os.path.join(ROOT, "sst_raw/stanfordSentimentTreebank")
    labels, phrases = {}, {}
    with open(os.path.join(base, "sentiment_labels.txt"), encoding="utf-8") as g:
        for row in csv.DictReader(g, delimiter="|", quoting=csv.QUOTE_NONE):
            labels[row["phrase ids"]] = float(row["sentiment values"])
    with open(os.path.join(base, "dictionary.txt"), encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE):
            phrases[row[0]] = labels[row[1]]
    with open(os.path.join(base, "datasetSplit.txt"), encoding="utf-8") as spl:
        splits = {r["sentence_index"]: r["splitset_label"] for r in csv.DictReader(spl, delimiter=",", quoting=csv.QUOTE_NONE)}
    out = []
    with open(os.path.join(base, "datasetSentences.txt"), encoding="utf-8") as snt:
        for row in csv.DictReader(snt, delimiter="\t", quoting=csv.QUOTE_NONE):
            s = row["sentence"].encode("utf-8").replace(b"\xc3\x83\xc2", b"\xc3").replace(b"\xc3\x82\xc2", b"\xc2").decode("utf-8")
            s = s.replace("-LRB-", "(").replace("-RRB-", ")")
            if splits[row["sentence_index"]] != split_code:
                continue
            e = {"id": row["sentence_index"], "text": s, "score": phrases[s]}
            if binary:
                e["label"] = round(phrases[s])
            out.append(e)
    return out


def sst2(split):
    out = []
    with open(os.path.join(ROOT, "SST-2", split + ".tsv"), encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
            e = {"id": str(n), "text": row["sentence"]}
            if "label" in row:
                e["label"] = int(row["label"])
            out.append(e)
    return out


def imdb(split):
    out = []
    for label, cls in ((0, "neg"), (1, "pos")):
        d = os.path.join(ROOT, "aclImdb", split, cls)
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), encoding="utf-8") as f:
                out.append({"id": f"{split}/{cls}/{name[:-4]}", "text": f.read(), "label": label})
    return out


def reviews(label_map):
    names = label_map.split(",")
    out = []
    with open(os.path.join(ROOT, "reviews.csv"), encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            out.append({"id": row["id"], "text": row["review"], "label": names.index(row["stars"])})
    return out


def squad(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        data = json.load(f)
    out = []
    for article in data["data"]:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                answers = []
                for a in qa["answers"]:
                    s = a["answer_start"]
                    answers.append({"text": a["text"], "answer_start": s,
                                    "matches": p["context"][s:s + len(a["text"])] == a["text"]})
                e = {"id": qa["id"], "title": article.get("title", ""), "question": qa["question"],
                     "context": p["context"], "answers": answers}
                if qa.get("is_impossible"):
                    e["is_impossible"] = True
                out.append(e)
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    write("sst_trees_train", sst_trees("train", False))
    write("sst_trees_dev_binary", sst_trees("dev", True))
    write("sst_trees_test", sst_trees("test", False))
    write("sst_raw_train", sst_raw("1", False))
    write("sst_raw_validation_binary", sst_raw("3", True))
    write("sst_raw_test", sst_raw("2", False))
    write("sst2_train", sst2("train"))
    write("sst2_dev", sst2("dev"))
    write("sst2_test", sst2("test"))
    write("imdb_train", imdb("train"))
    write("imdb_test", imdb("test"))
    write("reviews", reviews("-1,0,1,2"))
    write("squad_v1", squad("squad_v1.json"))
    write("squad_v2", squad("squad_v2.json"))


if __name__ == "__main__":
    main()
