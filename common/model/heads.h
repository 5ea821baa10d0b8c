/* model/heads.h — task heads outside BERT, on top of BertModel's outputs (bert.h
 * BERT_HEAD_POOLED / BERT_HEAD_SEQUENCE), with the parameter names of the notebooks' modules:
 *
 *   mlp: pooled [CLS] -> classifier = nn.Sequential(Dropout, Linear, Act, Dropout, Linear, Act,
 *        ..., Dropout, Linear): hidden layer k is classifier.{3k+1}, the output layer
 *        classifier.{3K+1} (K hidden layers); Act is ReLU, GELU (erf) or Tanh.
 *   rnn: a GRU or LSTM stack (model/rnn.h, named rnn.*) over the last hidden state, each
 *        sequence over its own length (the attention mask); the last layer's final states, both
 *        directions side by side (torch's cat(hidden[-2], hidden[-1])) -> Dropout -> Linear out.
 *
 * Each head owns one allocation of parameters (and one of gradients), llm.c style, and its
 * activations. Forward takes the body's output, backward returns its gradient.
 * Shape key: B = batch, T = length, N = B*T, C = the body's width, K = outputs.
 * Must never: print, exit, read files or touch tensor memory other than through the backend.
 */
#ifndef BP_HEADS_H
#define BP_HEADS_H
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "base/log.h"
#include "model/params.h"
#include "model/rnn.h"

typedef enum head_activation { HEAD_RELU = 0, HEAD_GELU = 1, HEAD_TANH = 2 } head_activation;

/* "relu", "gelu", "tanh". Returns 0, or -1 with err. */
int head_parse_activation(const char *name, head_activation *out, bp_err *err);
const char *head_activation_name(head_activation a);

#define MLP_MAX_HIDDEN 8

typedef struct mlp_config {
    int input_size, outputs, num_hidden;
    int hidden[MLP_MAX_HIDDEN];
    head_activation activation;
    float dropout;            /* every Dropout of the Sequential, in training */
} mlp_config;

typedef struct mlp_head {
    mlp_config cfg;
    int max_B;
    size_t num_params;
    float *params_memory, *grads_memory;       /* grads NULL for inference */
    float *w[MLP_MAX_HIDDEN + 1], *b[MLP_MAX_HIDDEN + 1];   /* layer k: (out_k, in_k), (out_k) */
    float *gw[MLP_MAX_HIDDEN + 1], *gb[MLP_MAX_HIDDEN + 1];
    float *acts_memory;
    float *x[MLP_MAX_HIDDEN + 1];     /* (B, in_k) input of layer k, after its Dropout */
    float *pre[MLP_MAX_HIDDEN];       /* (B, h_k) before the activation */
    float *post[MLP_MAX_HIDDEN];      /* (B, h_k) after it */
    float *logits;                    /* (B, K) */
    float *dbuf[2];                   /* (B, widest) */
    int B, training;
    uint64_t dropout_key;
} mlp_head;

int mlp_config_check(const mlp_config *cfg, bp_err *err);
mlp_head *mlp_create(const mlp_config *cfg, backend *be, int max_B, int inference, bp_err *err);
void mlp_free(mlp_head *h, backend *be);
/* Torch's nn.Linear initialisation (weights and biases uniform(+-1/sqrt(in))) into a host array
 * of num_params floats. Can't fail. */
void mlp_init_host(const mlp_head *h, float *host, uint64_t seed);
int mlp_list_params(const mlp_head *h, size_t flat_base, param_list *list, bp_err *err);
/* logits = head(pooled (B, input_size)). The Dropout of site k is keyed mix(dropout_key, k). */
void mlp_forward(mlp_head *h, backend *be, const float *pooled, int B, int training, uint64_t dropout_key);
/* From dlogits (B, K): parameter gradients added, d_pooled (B, input_size) written (NULL: not
 * wanted). */
void mlp_backward(mlp_head *h, backend *be, const float *dlogits, float *d_pooled);

typedef struct rnn_head_config {
    rnn_config rnn;           /* rnn.input_size = the body's width */
    int outputs;
    float dropout;            /* before out, in training */
} rnn_head_config;

typedef struct rnn_head {
    rnn_head_config cfg;
    int max_B, D;
    size_t num_params;
    float *params_memory, *grads_memory;
    rnn_stack *stack;         /* rnn.*: its parameters first in params_memory */
    float *out_w, *out_b;     /* (K, D*H) out.weight, (K) out.bias */
    float *g_out_w, *g_out_b;
    float *acts_memory;
    float *final;             /* (B, D*H) final states after the Dropout */
    float *d_final;           /* (B, D*H) */
    float *logits;            /* (B, K) */
    int B, training;
    uint64_t dropout_key;
} rnn_head;

int rnn_head_config_check(const rnn_head_config *cfg, bp_err *err);
rnn_head *rnn_head_create(const rnn_head_config *cfg, backend *be, int max_B, int max_T, int inference,
                          bp_err *err);
void rnn_head_free(rnn_head *h, backend *be);
void rnn_head_init_host(const rnn_head *h, float *host, uint64_t seed);
int rnn_head_list_params(const rnn_head *h, size_t flat_base, param_list *list, bp_err *err);
/* logits = head(hidden (N, C)) for the batch whose mask was given to rnn_set_lengths(h->stack). */
void rnn_head_forward(rnn_head *h, backend *be, const float *hidden, int training, uint64_t dropout_key);
/* From dlogits (B, K): parameter gradients added, d_hidden (N, C) written (NULL: not wanted). */
void rnn_head_backward(rnn_head *h, backend *be, const float *hidden, const float *dlogits, float *d_hidden);

#endif
