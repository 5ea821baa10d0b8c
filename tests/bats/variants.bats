#!/usr/bin/env bats
# The model variants through train and eval: torch's parameter counts in the log, the notebooks'
# own torch modules loading bertpipe's state dicts with load_state_dict(strict=True) and giving
# the same logits, a BCE model's scores through postprocess and score, and refused options.
# Inputs come from the embedded default data (sentiment and SQuAD-shaped sets).
load test_helper

VOCAB="$BERTPIPE_TOP/pipelines/default/vocab.txt"
EVAL="$BERTPIPE_BIN/eval"

need_torch() {
  /usr/bin/python3 -c 'import torch' 2>/dev/null || skip "no python3-torch at /usr/bin/python3"
}

# QA batches of the default SQuAD-shaped set: split N-questions batch-size epochs [batch args]
qa_batches() {
  local split=$1 n=$2 bs=$3 ep=$4; shift 4
  extract --format squad --limit "$n" "$BERTPIPE_TOP/pipelines/default/squad-$split.json" |
    tokenize --vocab "$VOCAB" --max-length 48 --doc-stride 16 | batch --batch-size "$bs" --epochs "$ep" "$@"
}

# A config.json of these sizes (BertConfig keys; the baselines read the same ones).
config_json() { # file vocab hidden layers heads intermediate eps
  printf '{"model_type": "bert", "vocab_size": %d, "hidden_size": %d, "num_hidden_layers": %d, "num_attention_heads": %d, "intermediate_size": %d, "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": %s}\n' \
    "$2" "$3" "$4" "$5" "$6" "$7" >"$1"
}

@test "bert-base + BiGRU head: 112241409 parameters, 2759169 trainable after --freeze bert (torch's count)" {
  batches train 4 2 1 --out "file:$TMP/b.batches"
  config_json "$TMP/base.json" 30522 768 12 12 3072 1e-12
  BERTPIPE_QUIET=0 train --in "file:$TMP/b.batches" --config "$TMP/base.json" --head gru --loss bce --freeze bert \
    --optimizer adam --lr 1e-3 --max-steps 1 --threads 2 2>"$TMP/err" >/dev/null
  grep -q "model: BertWithGRUHead (body bert, head gru, loss bce), 112241409 parameters, all trainable before freezing" "$TMP/err"
  grep -q "2759169 trainable of 112241409 parameters after --freeze bert" "$TMP/err"
  grep -q "adam over 2759169 parameters" "$TMP/err"
}

@test "the LSTM baseline at 768 has 28167170 parameters, the Transformer baseline at 768 with 12 heads 28956418" {
  qa_batches train 4 2 1 --out "file:$TMP/q.batches"
  config_json "$TMP/c.json" 30522 768 1 12 2048 1e-5
  BERTPIPE_QUIET=0 train --in "file:$TMP/q.batches" --config "$TMP/c.json" --model lstm --max-steps 1 --threads 2 \
    2>"$TMP/lstm" >/dev/null
  grep -q "model: LSTMForQuestionAnswering (body lstm, head linear, loss auto), 28167170 parameters" "$TMP/lstm"
  grep -q "28167170 trainable of 28167170 parameters$" "$TMP/lstm"
  BERTPIPE_QUIET=0 train --in "file:$TMP/q.batches" --config "$TMP/c.json" --model transformer --max-steps 1 --threads 2 \
    2>"$TMP/tr" >/dev/null
  grep -q "model: TransformerForQuestionAnswering (body transformer, head linear, loss auto), 28956418 parameters" "$TMP/tr"
}

# Train a variant briefly, evaluate it, and check it in its torch module: split, train args...
roundtrip() { # task(cls|qa) name train-args...
  local task=$1 name=$2; shift 2
  if [ "$task" = qa ]; then
    qa_batches train 24 8 1 --out "file:$TMP/$name.train"
    qa_batches validation 10 8 1 --no-shuffle --out "file:$TMP/$name.val"
  else
    batches train 64 16 1 --out "file:$TMP/$name.train"
    batches validation 24 8 1 --no-shuffle --out "file:$TMP/$name.val"
  fi
  train --in "file:$TMP/$name.train" --vocab "$VOCAB" --save "$TMP/$name" --threads 2 "$@" >/dev/null
  "$EVAL" --checkpoint "$TMP/$name" --in "file:$TMP/$name.val" --threads 2 | frames2json >"$TMP/$name.ours"
  frames2json --in "file:$TMP/$name.val" --out "$TMP/$name.val.jsonl"
  run /usr/bin/python3 "$BERTPIPE_TOP/tests/reference/variant_roundtrip.py" "$TMP/$name" "$TMP/$name.val.jsonl" \
    "$TMP/$name.ref" "$TMP/$name.ours"
  echo "$output"
  [ "$status" -eq 0 ]
}

@test "a GRU-head model over a frozen BERT loads strict into the IMDB notebook's module, same logits" {
  need_torch
  roundtrip cls gru --preset tiny --head gru --loss bce --freeze bert --optimizer adam --lr 1e-3 --rnn-hidden 16
  [[ "$output" == *"BertGRUSentiment loaded strict"* ]]
  grep -q '"freeze": "bert"' "$TMP/gru/config.json"
}

@test "an MLP-head model (SGD, Nesterov) loads strict into its nn.Sequential module, same logits" {
  need_torch
  roundtrip cls mlp --preset tiny --head mlp --mlp-hidden 32,16 --activation gelu --optimizer sgd --momentum 0.9 --nesterov --lr 0.05
  [[ "$output" == *"BertMLPClassifier loaded strict"* ]]
}

@test "an LSTM-head model with embeddings and layer 0 frozen loads strict, same logits" {
  need_torch
  roundtrip cls lstmhead --preset tiny --head lstm --unidirectional --rnn-layers 1 --rnn-hidden 12 --freeze embeddings,layers:0-0
  [[ "$output" == *"BertGRUSentiment loaded strict"* ]]
}

@test "the LSTM baseline loads strict into Embedding -> nn.LSTM -> qa_outputs, same logits" {
  need_torch
  roundtrip qa lstm --model lstm --hidden 32 --lr 1e-3
  [[ "$output" == *"LSTMForQuestionAnswering loaded strict"* ]]
}

@test "the Transformer baseline loads strict into Embedding -> nn.TransformerEncoderLayer -> qa_outputs, same logits" {
  need_torch
  roundtrip qa transformer --model transformer --hidden 32 --heads 4 --intermediate 48 --lr 1e-3
  [[ "$output" == *"TransformerForQuestionAnswering loaded strict"* ]]
}

@test "a BCE model's one logit leaves eval as two class scores that postprocess and score read" {
  batches train 64 16 1 --out "file:$TMP/t.batches"
  batches validation 20 8 1 --no-shuffle --out "file:$TMP/v.batches"
  train --in "file:$TMP/t.batches" --preset tiny --vocab "$VOCAB" --head gru --loss bce --rnn-hidden 8 --save "$TMP/m" \
    --threads 2 >/dev/null
  grep -q '"loss": "bce"' "$TMP/m/config.json"
  grep -q '"positive"' "$TMP/m/config.json"
  "$EVAL" --checkpoint "$TMP/m" --in "file:$TMP/v.batches" --threads 2 >"$TMP/logits"
  frames2json --in "file:$TMP/logits" | grep '"k":"logits"' | head -1 | grep -q '"logits":{"dtype":"f32","shape":\[8,2\]'
  run bash -c "postprocess --in 'file:$TMP/logits' | score"
  [ "$status" -eq 0 ]
  [[ "$output" == *'"accuracy"'* ]]
  # the predict pipeline rebuilds the variant from config.json too
  run bash -c "echo 'a wonderful, moving film' | '$BERTPIPE_TOP/pipelines/predict-sst' '$TMP/m'"
  [ "$status" -eq 0 ]
  [[ "$output" =~ ^(negative|positive)$'\t'0\.[0-9]{4}$'\t'"a wonderful, moving film"$ ]]
}

@test "variant options are checked: one error line each" {
  batches train 16 8 1 --out "file:$TMP/b.batches"
  run bash -c "train --in 'file:$TMP/b.batches' --preset tiny --freeze layers:5-5 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" train
  grep -q "layers 0..1" "$TMP/err"
  run bash -c "train --in 'file:$TMP/b.batches' --preset tiny --optimizer rmsprop 2>'$TMP/err' >/dev/null"
  [ "$status" -eq 2 ]
  grep -q "optimizer 'rmsprop' unknown (adamw, adam, sgd)" "$TMP/err"
  qa_batches train 4 2 1 --out "file:$TMP/q.batches"
  run bash -c "train --in 'file:$TMP/q.batches' --preset tiny --head mlp 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  assert_one_error_line "$TMP/err" train
  grep -q "the mlp head is for classification" "$TMP/err"
  run bash -c "train --in 'file:$TMP/b.batches' --model lstm --hidden 16 2>'$TMP/err' >/dev/null"
  [ "$status" -ne 0 ]
  grep -q "QA baseline" "$TMP/err"
  train --in "file:$TMP/b.batches" --preset tiny --save "$TMP/m" --max-steps 1 >/dev/null
  run bash -c "train --in 'file:$TMP/b.batches' --resume '$TMP/m' --head gru 2>'$TMP/err' >/dev/null"
  [ "$status" -eq 2 ]
  grep -q "keeps the variant saved with it" "$TMP/err"
}

@test "--schedule constant keeps the rate (the notebooks' plain Adam); linear decays it to 0 at the last step" {
  batches train 64 16 1 --out "file:$TMP/b.batches"
  train --in "file:$TMP/b.batches" --preset tiny --head gru --optimizer adam --lr 1e-3 --schedule constant --threads 2 |
    frames2json >"$TMP/constant"
  [ "$(grep '"scope":"train"' "$TMP/constant" | grep -c '"lr":0.001\(0*\)[0-9]*,')" -eq 4 ]
  train --in "file:$TMP/b.batches" --preset tiny --head gru --optimizer adam --lr 1e-3 --threads 2 | frames2json >"$TMP/linear"
  grep '"scope":"train"' "$TMP/linear" | tail -1 | grep -q '"lr":0.00025'
  run bash -c "train --in 'file:$TMP/b.batches' --preset tiny --schedule cosine 2>'$TMP/err' >/dev/null"
  [ "$status" -eq 2 ]
  grep -q "schedule 'cosine' unknown" "$TMP/err"
}
