#!/usr/bin/python3
"""squad_metric_ref.py — an independent Python reference for the SQuAD metrics in
common/eval/metrics.c, written from the published definition of the SQuAD evaluation:

  normalise(s): lower-case; drop every character of string.punctuation; replace each
  whole word a / an / the (regex \\b(a|an|the)\\b) by a space; split on whitespace and
  join with single spaces.
  exact match: normalise(prediction) == normalise(gold).
  token F1: tokens = normalise(s).split(); common = size of the multiset intersection;
  0 when common is 0, else harmonic mean of common/len(pred) and common/len(gold).
  v1.1: every question is scored against all its golds (max); a question without a
  prediction scores 0; averages are 100 * sum / count.
  v2.0: golds that normalise to "" are dropped, an unanswerable question's only gold is
  ""; F1 with an empty token list is 1 when both are empty, else 0; HasAns/NoAns split.

Modes (run with Debian's /usr/bin/python3, standard library only):
  squad_metric_ref.py DATASET PREDICTIONS [--v2]
        scores like the official script; prints {"exact_match": .., "f1": ..} (v1.1) or
        the v2.0 dictionary.
  squad_metric_ref.py --fixtures DIR
        the expected values for tests/fixtures/squad (see expected.json's "generated_by").
  squad_metric_ref.py --unicode-table
        one line per code point whose Python behaviour the C code must reproduce
        (see scripts/parity-squad-score).
  squad_metric_ref.py --perturb DATASET SEED
        predictions for DATASET: each question's first answer, altered in a seeded way
        (for the parity run).
"""
import collections
import json
import random
import re
import string
import sys

PUNCTUATION = frozenset(string.punctuation)
ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text):
    lowered = text.lower()
    no_punct = "".join(ch for ch in lowered if ch not in PUNCTUATION)
    no_articles = ARTICLES.sub(" ", no_punct)
    return " ".join(no_articles.split())


def exact(prediction, gold):
    return int(normalise(prediction) == normalise(gold))


def token_f1(prediction, gold, v2=False):
    pred_tokens = normalise(prediction).split()
    gold_tokens = normalise(gold).split()
    if v2 and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    overlap = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    common = sum(overlap.values())
    if common == 0:
        return 0.0
    precision = 1.0 * common / len(pred_tokens)
    recall = 1.0 * common / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def questions(dataset):
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield qa


def score_question(qa, predictions, v2):
    """(em, f1, has_answer) of one question; a missing prediction scores 0."""
    golds = [a["text"] for a in qa["answers"]]
    has_answer = bool(golds)
    if v2:
        golds = [g for g in golds if normalise(g)] or [""]
    if qa["id"] not in predictions:
        return 0, 0.0, has_answer
    pred = predictions[qa["id"]]
    return (max(exact(pred, g) for g in golds),
            max(token_f1(pred, g, v2) for g in golds), has_answer)


def score(dataset, predictions, v2=False):
    em_sum = f1_sum = 0
    per_question = collections.OrderedDict()
    split = {True: [0, 0.0, 0], False: [0, 0.0, 0]}
    for qa in questions(dataset):
        em, f1, has_answer = score_question(qa, predictions, v2)
        per_question[qa["id"]] = [em, f1]
        em_sum += em
        f1_sum += f1
        part = split[has_answer]
        part[0] += em
        part[1] += f1
        part[2] += 1
    total = len(per_question)
    if not v2:
        result = collections.OrderedDict(
            [("exact_match", 100.0 * em_sum / total), ("f1", 100.0 * f1_sum / total)])
    else:
        result = collections.OrderedDict(
            [("exact", 100.0 * em_sum / total), ("f1", 100.0 * f1_sum / total), ("total", total)])
        for name, key in (("HasAns", True), ("NoAns", False)):
            em_part, f1_part, count = split[key]
            if count:
                result[name + "_exact"] = 100.0 * em_part / count
                result[name + "_f1"] = 100.0 * f1_part / count
                result[name + "_total"] = count
    return result, per_question


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# Strings whose normal form the C unit test checks one by one: each exercises a rule.
NORMALISE_CASES = [
    "The Quick  Brown fox.",
    "an apple, a pear and the plum",
    "Anatomy theatre: the_end and a-n-d",
    "  \t leading and trailing \n ",
    "ÉCOLE Normale Supérieure",
    "İstanbul",
    "ΟΔΟΣ ΣΑΣ. Σ",
    "ΌΣΟΣ'Σ",
    "ǅemal Ⅻ",
    "Straße STRASSE",
    "x\u00a0y\u3000z\u2009w\u0085v",
    "a\u0301 the\u0300 an",
    "1st the2 2the 3 a",
    "«the» “a” — an",
    "",
    "...!!!",
    "Ⓐ ⓐ",
    "the、a。an",
]

# Pairs the C unit test scores one by one (prediction, gold).
PAIR_CASES = [
    ("Denver Broncos", "Denver Broncos"),
    ("the Denver Broncos!", "Denver Broncos"),
    ("Broncos", "Denver Broncos"),
    ("Denver Denver Broncos", "Denver Broncos Broncos"),
    ("", "Denver Broncos"),
    ("", ""),
    ("the", ""),
    ("Carolina Panthers", "Denver Broncos"),
    ("ÉCOLE", "école"),
    ("ΟΔΟΣ", "οδος"),
    ("ΟΔΟΣ", "οδoς"),
    ("in 1970s", "the 1970s"),
]

# Floats whose Python repr the C formatter must reproduce (the official output format).
FLOAT_CASES = [100.0, 0.0, 81.20151371807, 1e-05, 0.0001, 1e16, 1234567890123456.0, 0.1,
               2.5e-07, -3.0, 66.66666666666667, 1.5e+300, 5e-324, 123.456]


def fixtures(directory):
    v1_data = load(directory + "/tiny-v1.json")
    v1_pred = load(directory + "/tiny-v1-predictions.json")
    v2_data = load(directory + "/tiny-v2.json")
    v2_pred = load(directory + "/tiny-v2-predictions.json")
    v1_result, v1_questions = score(v1_data, v1_pred)
    v2_result, v2_questions = score(v2_data, v2_pred, v2=True)
    return collections.OrderedDict([
        ("generated_by", "/usr/bin/python3 tests/reference/squad_metric_ref.py --fixtures "
                         "tests/fixtures/squad > tests/fixtures/squad/expected.json"),
        ("normalize", [[s, normalise(s)] for s in NORMALISE_CASES]),
        ("pairs", [[p, g, exact(p, g), token_f1(p, g), token_f1(p, g, v2=True)]
                   for p, g in PAIR_CASES]),
        ("float_repr", [[x, repr(x)] for x in FLOAT_CASES]),
        ("v1", collections.OrderedDict([("result", v1_result), ("per_question", v1_questions),
                                        ("official_output", json.dumps(v1_result) + "\n")])),
        ("v2", collections.OrderedDict([("result", v2_result), ("per_question", v2_questions),
                                        ("official_output", json.dumps(v2_result, indent=2) + "\n")])),
    ])


def unicode_table():
    """For every code point (surrogates excepted) whose handling is not trivial, print
    "HEX lower-as-hex-list flags" where flags are s (split whitespace), w (regex word
    char), c (cased), i (case-ignorable). Cased and case-ignorable are observed through
    the final-sigma rule of str.lower(), the only place Python uses them."""
    out = sys.stdout
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        lowered = ch.lower()
        flags = ""
        if len(("a" + ch + "b").split()) == 2:
            flags += "s"
        if re.match(r"\w", ch):
            flags += "w"
        cased = (ch + "\u03a3").lower()[-1] == "\u03c2"
        ignorable = not cased and ("A" + ch + "\u03a3").lower()[-1] == "\u03c2"
        if cased:
            flags += "c"
        if ignorable:
            flags += "i"
        if lowered == ch and not flags:
            continue
        out.write("%X %s %s\n" % (cp, ",".join("%X" % ord(c) for c in lowered), flags or "-"))


def perturb(dataset, seed):
    """Each question's first answer, and for about a third of them a change that moves
    EM or F1: truncation, a word of another answer, case and punctuation, an article,
    an empty string, or no prediction at all."""
    rng = random.Random(seed)
    predictions = collections.OrderedDict()
    all_questions = list(questions(dataset))
    for qa in all_questions:
        answer = qa["answers"][0]["text"] if qa["answers"] else ""
        roll = rng.random()
        if roll < 0.05:
            continue
        if roll < 0.10:
            answer = ""
        elif roll < 0.15:
            answer = answer.upper() + "!"
        elif roll < 0.20:
            answer = "The " + answer
        elif roll < 0.25:
            words = answer.split()
            answer = " ".join(words[: max(1, len(words) // 2)])
        elif roll < 0.30:
            other = rng.choice(all_questions)
            if other["answers"]:
                answer = answer + " " + other["answers"][0]["text"].split()[0]
        elif roll < 0.35:
            answer = answer.replace(" ", "\u00a0")
        predictions[qa["id"]] = answer
    return predictions


def main(argv):
    if len(argv) == 3 and argv[1] == "--fixtures":
        json.dump(fixtures(argv[2]), sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
    elif len(argv) == 2 and argv[1] == "--unicode-table":
        unicode_table()
    elif len(argv) == 4 and argv[1] == "--perturb":
        json.dump(perturb(load(argv[2]), int(argv[3])), sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    elif len(argv) in (3, 4) and (len(argv) == 3 or argv[3] == "--v2"):
        result, _ = score(load(argv[1]), load(argv[2]), v2=len(argv) == 4)
        print(json.dumps(result) if len(argv) == 3 else json.dumps(result, indent=2))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
