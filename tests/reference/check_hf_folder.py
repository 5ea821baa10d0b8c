#!/usr/bin/python3
"""check_hf_folder.py — does a folder saved by train hold what transformers loads?

    /usr/bin/python3 tests/reference/check_hf_folder.py MODEL_DIR [--cased|--uncased] [--max-length N]

Where transformers is importable, the folder is loaded with AutoTokenizer and
AutoModelForSequenceClassification / AutoModelForQuestionAnswering, and the tokenizer's casing
and length are compared with what was asked. Where it is not (this machine: no PyPI), the
files and keys are checked against what those loaders read:

  config.json              model_type "bert", architectures, the BertConfig sizes, id2label and
                           label2id agreeing, floats in their shortest form
  model.safetensors        the header parses (8-byte length, JSON), format "pt", every tensor
                           of the architecture's state dict with the shape the config implies,
                           nothing else; with torch, every tensor reads back finite
  vocab.txt                the special tokens the tokenizer files name, at their ids
  tokenizer_config.json    tokenizer_class BertTokenizer, do_lower_case, model_max_length
  special_tokens_map.json  the same special tokens
  trainer_state.json       (when present) only TrainerState's fields, so TrainerState(**json) works

Prints "check_hf_folder: OK ..." and exits 0, or names the first problem and exits 1.
"""
import json
import os
import struct
import sys

# TrainerState's dataclass fields (transformers/trainer_callback.py).
TRAINER_STATE_FIELDS = {
    "epoch", "global_step", "max_steps", "logging_steps", "eval_steps", "save_steps", "train_batch_size",
    "num_train_epochs", "num_input_tokens_seen", "total_flos", "log_history", "best_metric", "best_global_step",
    "best_model_checkpoint", "is_local_process_zero", "is_world_process_zero", "is_hyper_param_search",
    "trial_name", "trial_params", "stateful_callbacks",
}
SPECIAL = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}


def fail(msg):
    print("check_hf_folder: FAIL " + msg)
    sys.exit(1)


def load_json(folder, name):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        fail("no %s in %s" % (name, folder))
    return json.load(open(path, encoding="utf-8"))


def expected_tensors(cfg, arch):
    H, I, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    t = {
        "bert.embeddings.word_embeddings.weight": [V, H],
        "bert.embeddings.position_embeddings.weight": [cfg["max_position_embeddings"], H],
        "bert.embeddings.token_type_embeddings.weight": [cfg["type_vocab_size"], H],
        "bert.embeddings.LayerNorm.weight": [H], "bert.embeddings.LayerNorm.bias": [H],
    }
    for i in range(L):
        p = "bert.encoder.layer.%d." % i
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            t[p + name + ".weight"], t[p + name + ".bias"] = [H, H], [H]
        t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = [I, H], [I]
        t[p + "output.dense.weight"], t[p + "output.dense.bias"] = [H, I], [H]
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + ln + ".weight"], t[p + ln + ".bias"] = [H], [H]
    if arch == "BertForQuestionAnswering":
        t["qa_outputs.weight"], t["qa_outputs.bias"] = [2, H], [2]
    else:
        t["bert.pooler.dense.weight"], t["bert.pooler.dense.bias"] = [H, H], [H]
        n = len(cfg["id2label"])
        t["classifier.weight"], t["classifier.bias"] = [n, H], [n]
    return t


def check_config(path):
    text = open(path, encoding="utf-8").read()
    cfg = json.loads(text)
    if cfg.get("model_type") != "bert":
        fail("config.json: model_type %r" % cfg.get("model_type"))
    arch = (cfg.get("architectures") or [None])[0]
    if arch not in ("BertForSequenceClassification", "BertForQuestionAnswering"):
        fail("config.json: architectures %r" % cfg.get("architectures"))
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_dropout_prob",
                "attention_probs_dropout_prob", "initializer_range", "hidden_act", "id2label", "label2id"):
        if key not in cfg:
            fail("config.json lacks %s" % key)
    if {v: int(k) for k, v in cfg["id2label"].items()} != cfg["label2id"]:
        fail("config.json: id2label and label2id disagree")
    # floats as Python writes them: the shortest form that reads back (json.dumps round trip)
    for key, value in cfg.items():
        if isinstance(value, float) and ('"%s": %s' % (key, repr(value))) not in text:
            fail("config.json: %s is not written in its shortest form (%r)" % (key, value))
    return cfg, arch


def check_safetensors(path, cfg, arch):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", {})
    if meta.get("format") != "pt":
        fail("model.safetensors: metadata format %r (transformers wants \"pt\")" % meta.get("format"))
    want = expected_tensors(cfg, arch)
    got = {k: v["shape"] for k, v in header.items()}
    if set(got) != set(want):
        fail("model.safetensors: tensors differ from %s's: missing %s, unexpected %s"
             % (arch, sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5]))
    for k, shape in want.items():
        if got[k] != shape or header[k]["dtype"] != "F32":
            fail("model.safetensors: %s is %s %s, expected F32 %s" % (k, header[k]["dtype"], got[k], shape))
    try:
        import torch
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from make_checkpoint_fixtures import read_safetensors
        params, _ = read_safetensors(path)
        if not all(torch.isfinite(v).all() for v in params.values()):
            fail("model.safetensors: a tensor is not finite")
        return "%d tensors (read back with torch)" % len(params)
    except ImportError:
        return "%d tensors" % len(got)


def check_tokenizer(folder, cased, max_length):
    if not os.path.exists(os.path.join(folder, "vocab.txt")):
        fail("no vocab.txt in %s" % folder)
    vocab = [line.rstrip("\n").rstrip() for line in open(os.path.join(folder, "vocab.txt"), encoding="utf-8")]
    ids = {tok: i for i, tok in enumerate(vocab)}
    tc, sm = load_json(folder, "tokenizer_config.json"), load_json(folder, "special_tokens_map.json")
    if tc.get("tokenizer_class") != "BertTokenizer":
        fail("tokenizer_config.json: tokenizer_class %r" % tc.get("tokenizer_class"))
    if not isinstance(tc.get("do_lower_case"), bool) or (cased is not None and tc["do_lower_case"] == cased):
        fail("tokenizer_config.json: do_lower_case %r" % tc.get("do_lower_case"))
    if max_length is not None and tc.get("model_max_length") != max_length:
        fail("tokenizer_config.json: model_max_length %r, expected %d" % (tc.get("model_max_length"), max_length))
    for key, token in SPECIAL.items():
        if token in ids and (sm.get(key) != token or tc.get(key) != token):
            fail("%s is in vocab.txt but not named %s in the tokenizer files" % (token, key))
    for i, entry in tc.get("added_tokens_decoder", {}).items():
        if ids.get(entry["content"]) != int(i) or not entry.get("special"):
            fail("added_tokens_decoder: %s is not %s in vocab.txt" % (i, entry["content"]))
    return tc


def check_trainer_state(path):
    if not os.path.exists(path):
        return ""
    state = json.load(open(path, encoding="utf-8"))
    unknown = set(state) - TRAINER_STATE_FIELDS
    if unknown:
        fail("trainer_state.json: keys TrainerState does not take: %s" % sorted(unknown))
    if not isinstance(state.get("log_history"), list) or not all("step" in e for e in state["log_history"]):
        fail("trainer_state.json: log_history is not a list of entries with a step")
    return ", trainer_state.json with %d log entries" % len(state["log_history"])


def with_transformers(folder, arch, cased, max_length):
    import transformers  # noqa: F401  (ImportError: the caller checks files instead)
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    auto = AutoModelForQuestionAnswering if arch == "BertForQuestionAnswering" else AutoModelForSequenceClassification
    model = auto.from_pretrained(folder)
    if cased is not None and tok("The Movie")["input_ids"] == tok("the movie")["input_ids"] and cased:
        fail("transformers tokenizes the cased model uncased")
    if max_length is not None and tok.model_max_length != max_length:
        fail("transformers' tokenizer model_max_length %d, expected %d" % (tok.model_max_length, max_length))
    return "loaded in transformers %s as %s" % (transformers.__version__, type(model).__name__)


def main():
    args = sys.argv[1:]
    folder = args[0]
    cased = True if "--cased" in args else False if "--uncased" in args else None
    max_length = int(args[args.index("--max-length") + 1]) if "--max-length" in args else None
    cfg, arch = check_config(os.path.join(folder, "config.json"))
    try:
        print("check_hf_folder: OK " + with_transformers(folder, arch, cased, max_length))
        return
    except ImportError:
        pass
    tensors = check_safetensors(os.path.join(folder, "model.safetensors"), cfg, arch)
    tc = check_tokenizer(folder, cased, max_length)
    state = check_trainer_state(os.path.join(folder, "trainer_state.json"))
    print("check_hf_folder: OK files and keys (no transformers here): %s %s, do_lower_case %s, model_max_length %s%s"
          % (arch, tensors, tc["do_lower_case"], tc["model_max_length"], state))


if __name__ == "__main__":
    main()
