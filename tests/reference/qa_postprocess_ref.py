#!/usr/bin/python3
"""qa_postprocess_ref.py — reference outputs for common/eval/qa_postprocess.c, written from the
documented behaviour of Hugging Face run_qa's postprocess_qa_predictions (numpy, float32
logits as the Trainer returns them):

  per window: the n_best largest start and end logits (argsort descending; on ties the
  later index first, i.e. a stable argsort read backwards), every pair of context tokens
  with end >= start and end - start + 1 <= max_answer_length, score = start + end logit;
  the null score is start[0] + end[0], the minimum over windows (first window on ties);
  v2 adds the null; all candidates sorted by score (stable, descending), n_best kept, the
  null appended back in v2 if it fell out; text = context[first.start:last.end] in code
  points; "empty" with score 0 is put first when nothing has text; probabilities are the
  softmax of the kept scores; v2 predicts "" when null - best non-null > threshold.

Usage (Debian /usr/bin/python3 with numpy):
  qa_postprocess_ref.py tests/fixtures/squad/postprocess-cases.json \
      > tests/fixtures/squad/postprocess-expected.json
  qa_postprocess_ref.py --random COUNT SEED > cases.json
        seeded random cases in the same layout (for scripts/parity-qa-postprocess):
        multi-byte contexts, 1-3 overlapping windows of up to 96 tokens with question,
        [SEP] and padding tokens, v1 and v2, logits drawn from a normal distribution.
  qa_postprocess_ref.py --compare EXPECTED GOT
        exit 0 when GOT (the C driver's output) equals EXPECTED: same texts, kinds,
        windows, float32 scores and logits, probabilities within 1e-9.
"""
import collections
import json
import sys

import numpy as np


def top_indexes(logits, n):
    # kind="stable" makes the tie order a property of the definition rather than of
    # numpy's sort choice (they agree for the short windows of the fixtures).
    return np.argsort(logits, kind="stable")[::-1][:n].tolist()


def postprocess(case):
    opt = case["options"]
    context = case["context"]
    n_best, max_len, v2 = opt["n_best"], opt["max_answer_length"], opt["v2"]
    candidates = []
    null = None
    for w, window in enumerate(case["windows"]):
        start = np.array(window["start"], dtype=np.float32)
        end = np.array(window["end"], dtype=np.float32)
        offsets = [None if o == [-1, -1] else o for o in window["offsets"]]
        null_score = start[0] + end[0]
        if null is None or null["score"] > null_score:
            null = {"offsets": (0, 0), "score": null_score, "start_logit": start[0],
                    "end_logit": end[0], "window": w, "kind": "null"}
        for s in top_indexes(start, n_best):
            for e in top_indexes(end, n_best):
                if offsets[s] is None or offsets[e] is None:
                    continue
                if e < s or e - s + 1 > max_len:
                    continue
                candidates.append({"offsets": (offsets[s][0], offsets[e][1]),
                                   "score": start[s] + end[e], "start_logit": start[s],
                                   "end_logit": end[e], "window": w, "kind": "span"})
    if v2:
        candidates.append(null)
    kept = sorted(candidates, key=lambda c: c["score"], reverse=True)[:n_best]
    if v2 and not any(c["offsets"] == (0, 0) for c in kept):
        kept.append(null)
    for c in kept:
        c["text"] = context[c["offsets"][0]:c["offsets"][1]]
    if not kept or (len(kept) == 1 and kept[0]["text"] == ""):
        kept.insert(0, {"text": "empty", "score": 0.0, "start_logit": 0.0, "end_logit": 0.0,
                        "window": -1, "kind": "empty"})
    scores = np.array([c["score"] for c in kept], dtype=np.float64)
    exp_scores = np.exp(scores - np.max(scores))
    probabilities = exp_scores / exp_scores.sum()
    result = collections.OrderedDict()
    if not v2:
        result["answer"] = kept[0]["text"]
        result["predicted_null"] = False
        result["score_diff"] = 0.0
    else:
        best = next(c for c in kept if c["text"] != "")
        diff = np.float32(null["score"]) - best["start_logit"] - best["end_logit"]
        result["score_diff"] = float(diff)
        result["predicted_null"] = bool(diff > np.float32(opt["threshold"]))
        result["answer"] = "" if result["predicted_null"] else best["text"]
        result["null_score"] = float(null["score"])
    result["nbest"] = [collections.OrderedDict([
        ("text", c["text"]), ("kind", c["kind"]), ("window", c["window"]),
        ("score", float(c["score"])), ("start_logit", float(c["start_logit"])),
        ("end_logit", float(c["end_logit"])), ("probability", float(p))])
        for c, p in zip(kept, probabilities)]
    return result


WORDS = ["river", "bridge", "Brücke", "über", "Fluß", "石橋", "🌉", "Ἀθηνᾶ", "stone", "the",
         "mill", "façade", "naïve", "tide", "1938", "—", "ok", "ΟΔΟΣ", "keeper", "wick"]


def random_case(rng, index):
    n_words = int(rng.integers(5, 120))
    words = [WORDS[int(k)] for k in rng.integers(0, len(WORDS), n_words)]
    context = " ".join(words)
    word_offsets, at = [], 0
    for w in words:
        word_offsets.append([at, at + len(w)])
        at += len(w) + 1
    question_len = int(rng.integers(1, 8))
    seq_len = int(rng.integers(question_len + 4, 97))
    room = seq_len - question_len - 3  # [CLS] question [SEP] context [SEP]
    stride = max(1, room // 2)
    windows, first = [], 0
    while True:
        chunk = word_offsets[first:first + room]
        offsets = [[-1, -1]] * (question_len + 2) + chunk + [[-1, -1]]
        offsets += [[-1, -1]] * (seq_len - len(offsets))  # padding
        windows.append({"start": [float(x) for x in rng.normal(0, 3, seq_len).astype(np.float32)],
                        "end": [float(x) for x in rng.normal(0, 3, seq_len).astype(np.float32)],
                        "offsets": offsets})
        if first + room >= len(word_offsets) or len(windows) == 3:
            break
        first += stride
    v2 = bool(rng.integers(0, 2))
    return {"name": "random %d" % index, "context": context,
            "options": {"n_best": int(rng.choice([1, 3, 20])),
                        "max_answer_length": int(rng.choice([1, 5, 30])), "v2": v2,
                        "threshold": float(rng.choice([0.0, -1.0, 2.5]))},
            "windows": windows}


def compare(expected, got):
    bad = 0
    for i, (want, have) in enumerate(zip(expected["results"], got["results"])):
        same = (want["answer"] == have["answer"] and want["predicted_null"] == have["predicted_null"]
                and np.float32(want["score_diff"]) == np.float32(have["score_diff"])
                and len(want["nbest"]) == len(have["nbest"]))
        for w, h in zip(want["nbest"], have["nbest"]):
            same = same and all(w[k] == h[k] for k in ("text", "kind", "window", "score",
                                                      "start_logit", "end_logit"))
            same = same and abs(w["probability"] - h["probability"]) <= 1e-9
        if not same:
            bad += 1
            if bad <= 5:
                sys.stderr.write("case %d differs:\n  want %s\n  got  %s\n"
                                 % (i, json.dumps(want, ensure_ascii=False)[:600],
                                    json.dumps(have, ensure_ascii=False)[:600]))
    if len(expected["results"]) != len(got["results"]):
        sys.stderr.write("%d results expected, %d got\n"
                         % (len(expected["results"]), len(got["results"])))
        bad += 1
    return bad


def main(argv):
    if len(argv) == 4 and argv[1] == "--random":
        rng = np.random.default_rng(int(argv[3]))
        cases = [random_case(rng, i) for i in range(int(argv[2]))]
        json.dump({"cases": cases}, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if len(argv) == 4 and argv[1] == "--compare":
        with open(argv[2], encoding="utf-8") as f:
            expected = json.load(f)
        with open(argv[3], encoding="utf-8") as f:
            got = json.load(f)
        bad = compare(expected, got)
        print("%d of %d cases equal" % (len(expected["results"]) - bad, len(expected["results"])))
        return 1 if bad else 0
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    out = collections.OrderedDict([
        ("generated_by", "/usr/bin/python3 tests/reference/qa_postprocess_ref.py "
                         "tests/fixtures/squad/postprocess-cases.json > "
                         "tests/fixtures/squad/postprocess-expected.json"),
        ("results", [postprocess(case) for case in cases]),
    ])
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
