/* small_variant.h — a small model variant (model/model.h) and a small padded batch, shared by the
 * model tests that need one without a fixture (test_variants.c, test_model_io.c).
 * Header-only, static: each test binary has its own copy.
 */
#ifndef BP_SMALL_VARIANT_H
#define BP_SMALL_VARIANT_H
#include <stdint.h>

#include "model/model.h"

/* BERT L2 H16 A2 I24 (or a one-layer baseline at 16), vocabulary 40, 8 positions, `labels`
 * classes (QA: 2), weights drawn wide (std 0.3) so that gradients are far from zero; an mlp of
 * 12 and 10, rnn heads of 6 (2 bidirectional layers: the defaults). */
static inline model_config small_variant(model_body body, model_head head, int qa, int labels) {
    model_config c;
    model_config_default(&c);
    c.body = body;
    c.head = head;
    c.bert.vocab_size = 40;
    c.bert.hidden_size = 16;
    c.bert.num_hidden_layers = body == MODEL_BODY_BERT ? 2 : 1;
    c.bert.num_attention_heads = 2;
    c.bert.intermediate_size = 24;
    c.bert.max_position_embeddings = 8;
    c.bert.initializer_range = 0.3f;
    c.bert.head = qa ? BERT_HEAD_QA : BERT_HEAD_CLASSIFICATION;
    c.bert.num_labels = qa ? 2 : labels;
    c.mlp_hidden_layers = 2;
    c.mlp_hidden[0] = 12;
    c.mlp_hidden[1] = 10;
    c.rnn_hidden = 6;
    return c;
}

/* Two sequences of 8 and 5 tokens (padding inside the batch), no targets. */
static inline void small_batch(int32_t ids[16], int32_t types[16], int32_t mask[16], bert_batch *b) {
    for (int i = 0; i < 16; i++) {
        ids[i] = 1 + (i * 11) % 39;
        types[i] = i % 8 >= 4;
        mask[i] = i % 8 < (i < 8 ? 8 : 5);
    }
    *b = (bert_batch){ .B = 2, .T = 8, .input_ids = ids, .token_type_ids = types, .attention_mask = mask };
}

#endif
