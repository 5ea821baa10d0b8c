"""variant_modules.py — the notebooks' own torch modules for bertpipe's model variants, built from
a bertpipe config.json (its "bertpipe_variant" block), so that a state_dict saved by bertpipe
loads into them with load_state_dict(strict=True). Debian python3-torch only (no transformers):
BertModel is written here with Hugging Face's module names.

  BertModel                 embeddings.{word,position,token_type}_embeddings, embeddings.LayerNorm,
                            encoder.layer.N.{attention.self.{query,key,value}, attention.output.{dense,
                            LayerNorm}, intermediate.dense, output.{dense,LayerNorm}}, pooler.dense
  BertGRUSentiment          bert, rnn = nn.GRU / nn.LSTM over each sequence's length (packed),
                            out = Linear(D*H, K) on cat(h[-2], h[-1]) (the IMDB notebook)
  BertMLPClassifier         bert, classifier = nn.Sequential(Dropout, Linear, Act, Dropout, ..., Linear)
                            on the pooled [CLS] (the "custom networks" exercise)
  LSTMForQuestionAnswering  embedding, lstm (packed), qa_outputs
  TransformerForQuestionAnswering  embedding, encoder = nn.TransformerEncoderLayer (key padding
                            mask, no positions), qa_outputs
  BertForSequenceClassification / BertForQuestionAnswering   bert, classifier / qa_outputs

forward(batch) takes int64 tensors input_ids, token_type_ids, attention_mask [B, T] and returns
the logits: [B, K] for classification (K = 1 for bce), [B, T, 2] for QA. loss(logits, batch)
is the variant's training loss.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class BertLayer(nn.Module):
    def __init__(self, C, NH, I, eps, p):
        super().__init__()
        self.NH, self.p = NH, p
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        self.attention.self.query, self.attention.self.key, self.attention.self.value = (
            nn.Linear(C, C), nn.Linear(C, C), nn.Linear(C, C))
        self.attention.output = nn.Module()
        self.attention.output.dense, self.attention.output.LayerNorm = nn.Linear(C, C), nn.LayerNorm(C, eps=eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(C, I)
        self.output = nn.Module()
        self.output.dense, self.output.LayerNorm = nn.Linear(I, C), nn.LayerNorm(C, eps=eps)

    def forward(self, x, extended):
        B, T, C = x.shape
        D = C // self.NH
        s = self.attention.self

        def heads(t):
            return t.view(B, T, self.NH, D).permute(0, 2, 1, 3)
        q, k, v = heads(s.query(x)), heads(s.key(x)), heads(s.value(x))
        probs = F.dropout(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + extended, dim=-1), self.p, self.training)
        ctx = (probs @ v).permute(0, 2, 1, 3).reshape(B, T, C)
        o = self.attention.output
        a = o.LayerNorm(F.dropout(o.dense(ctx), self.p, self.training) + x)
        h = F.gelu(self.intermediate.dense(a))
        return self.output.LayerNorm(F.dropout(self.output.dense(h), self.p, self.training) + a)


class BertModel(nn.Module):
    def __init__(self, cfg, pooler=True):
        super().__init__()
        C, eps, p = cfg["hidden_size"], cfg["layer_norm_eps"], cfg["hidden_dropout_prob"]
        self.p = p
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(cfg["vocab_size"], C, padding_idx=cfg.get("pad_token_id", 0))
        self.embeddings.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], C)
        self.embeddings.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], C)
        self.embeddings.LayerNorm = nn.LayerNorm(C, eps=eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([BertLayer(C, cfg["num_attention_heads"], cfg["intermediate_size"], eps, p)
                                            for _ in range(cfg["num_hidden_layers"])])
        if pooler:
            self.pooler = nn.Module()
            self.pooler.dense = nn.Linear(C, C)

    def forward(self, ids, types, mask):
        T = ids.shape[1]
        e = self.embeddings
        x = e.word_embeddings(ids) + e.position_embeddings.weight[:T].unsqueeze(0) + e.token_type_embeddings(types)
        x = F.dropout(e.LayerNorm(x), self.p, self.training)
        extended = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            x = layer(x, extended)
        pooled = torch.tanh(self.pooler.dense(x[:, 0])) if hasattr(self, "pooler") else None
        return x, pooled


def lengths_of(mask):
    return mask.sum(1).long().cpu()


class BertForSequenceClassification(nn.Module):
    def __init__(self, cfg, K, p):
        super().__init__()
        self.bert, self.drop, self.classifier = BertModel(cfg), nn.Dropout(p), nn.Linear(cfg["hidden_size"], K)

    def forward(self, b):
        return self.classifier(self.drop(self.bert(b["input_ids"], b["token_type_ids"], b["attention_mask"])[1]))


class BertForQuestionAnswering(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.bert, self.qa_outputs = BertModel(cfg, pooler=False), nn.Linear(cfg["hidden_size"], 2)

    def forward(self, b):
        return self.qa_outputs(self.bert(b["input_ids"], b["token_type_ids"], b["attention_mask"])[0])


class BertMLPClassifier(nn.Module):
    def __init__(self, cfg, K, hidden, activation, p):
        super().__init__()
        self.bert = BertModel(cfg)
        layers, width = [nn.Dropout(p)], cfg["hidden_size"]
        for h in hidden:
            act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh()}[activation]
            layers += [nn.Linear(width, h), act, nn.Dropout(p)]
            width = h
        layers.append(nn.Linear(width, K))
        self.classifier = nn.Sequential(*layers)

    def forward(self, b):
        return self.classifier(self.bert(b["input_ids"], b["token_type_ids"], b["attention_mask"])[1])


class BertGRUSentiment(nn.Module):
    """The IMDB notebook's model (GRU; the same with an LSTM), over each sequence's length."""

    def __init__(self, cfg, K, cell, layers, hidden, bidirectional, rnn_dropout, p):
        super().__init__()
        self.bert = BertModel(cfg)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(cfg["hidden_size"], hidden, num_layers=layers, bidirectional=bidirectional, batch_first=True,
                       dropout=0 if layers < 2 else rnn_dropout)
        self.bidirectional, self.cell = bidirectional, cell
        self.out, self.dropout = nn.Linear(hidden * (2 if bidirectional else 1), K), nn.Dropout(p)

    def forward(self, b):
        mask = b["attention_mask"]
        hidden_states, _ = self.bert(b["input_ids"], b["token_type_ids"], mask)
        packed = pack_padded_sequence(hidden_states, lengths_of(mask), batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        h = state[0] if self.cell == "lstm" else state
        final = torch.cat((h[-2], h[-1]), dim=1) if self.bidirectional else h[-1]
        return self.out(self.dropout(final))


class LSTMForQuestionAnswering(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["hidden_size"]
        self.embedding, self.lstm, self.qa_outputs = nn.Embedding(cfg["vocab_size"], C), nn.LSTM(C, C, batch_first=True), nn.Linear(C, 2)

    def forward(self, b):
        mask = b["attention_mask"]
        T = mask.shape[1]
        packed = pack_padded_sequence(self.embedding(b["input_ids"]), lengths_of(mask), batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.lstm(packed)
        return self.qa_outputs(pad_packed_sequence(out, batch_first=True, total_length=T)[0])


class TransformerForQuestionAnswering(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["hidden_size"]
        self.embedding = nn.Embedding(cfg["vocab_size"], C)
        self.encoder = nn.TransformerEncoderLayer(C, cfg["num_attention_heads"], cfg["intermediate_size"],
                                                  dropout=cfg["hidden_dropout_prob"], batch_first=True,
                                                  layer_norm_eps=cfg["layer_norm_eps"])
        self.qa_outputs = nn.Linear(C, 2)

    def forward(self, b):
        return self.qa_outputs(self.encoder(self.embedding(b["input_ids"]), src_key_padding_mask=b["attention_mask"] == 0))


def build(cfg):
    """The module for a bertpipe config.json (a dict), and its loss name (ce, bce, mse, qa)."""
    v = cfg.get("bertpipe_variant", {})
    body, head, loss = v.get("body", "bert"), v.get("head", "linear"), v.get("loss", "auto")
    qa = cfg.get("architectures", [""])[0] == "BertForQuestionAnswering" or body != "bert"
    K = 1 if loss == "bce" else cfg.get("num_labels", len(cfg.get("id2label", {})) or 2)
    if loss == "auto":
        loss = "qa" if qa else ("mse" if K == 1 else "ce")
    classifier_p = cfg.get("classifier_dropout")
    p = v.get("head_dropout", classifier_p if classifier_p is not None else cfg["hidden_dropout_prob"])
    if body == "lstm":
        return LSTMForQuestionAnswering(cfg), "qa"
    if body == "transformer":
        return TransformerForQuestionAnswering(cfg), "qa"
    if head == "mlp":
        m = v.get("mlp", {})
        return BertMLPClassifier(cfg, K, m.get("hidden", [256]), m.get("activation", "relu"), p), loss
    if head in ("gru", "lstm"):
        r = v.get("rnn", {})
        return BertGRUSentiment(cfg, K, head, r.get("layers", 2), r.get("hidden", 256), r.get("bidirectional", True),
                                r.get("dropout", 0.25), p), loss
    if qa:
        return BertForQuestionAnswering(cfg), "qa"
    return BertForSequenceClassification(cfg, K, p), loss


def loss_of(kind, logits, b):
    """The variant's loss of a batch (targets as in bertpipe's batch frames)."""
    if kind == "qa":
        T = logits.shape[1]
        s = b["start_positions"].long().clamp(0, T)
        e = b["end_positions"].long().clamp(0, T)
        return (F.cross_entropy(logits[..., 0], s, ignore_index=T) + F.cross_entropy(logits[..., 1], e, ignore_index=T)) / 2
    y = b["labels"]
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
    if kind == "mse":
        return F.mse_loss(logits[:, 0], y.to(logits.dtype))
    return F.cross_entropy(logits, y.long())


def no_decay(name):
    """HF Trainer's rule, as bertpipe applies it: biases and LayerNorm weights take no decay."""
    return "bias" in name or "LayerNorm" in name or ".norm" in name


def frozen(name, spec):
    """Whether --freeze SPEC (bert, embeddings, encoder, layers:A-B, comma-separated) freezes the
    tensor NAME, as bertpipe reads it."""
    for item in [s for s in spec.split(",") if s]:
        if item == "bert" and name.startswith("bert."):
            return True
        if item == "embeddings" and (name.startswith("bert.embeddings.") or name == "embedding.weight"):
            return True
        if item == "encoder" and name.startswith("bert.encoder."):
            return True
        if item.startswith("layers:") and name.startswith("bert.encoder.layer."):
            a, b = map(int, item[7:].split("-"))
            if a <= int(name.split(".")[3]) <= b:
                return True
    return False
