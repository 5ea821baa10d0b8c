/* model/rnn.h — stacked, optionally bidirectional GRU and LSTM layers with the semantics of
 * torch.nn.GRU / torch.nn.LSTM (batch_first) run over a PackedSequence: every sequence runs over
 * its own length only, from a zero state, and padded positions of the output are 0 (what
 * pad_packed_sequence gives). Dropout between layers in training, as torch's `dropout`.
 * Shared by the rnn heads (model/heads.h) and the LSTM baseline (model/baselines.h).
 *
 * Per layer and direction the input projection of all time steps is one product (both
 * directions at once: their W_ih are stacked), then the backend runs one recurrent product per
 * step with the gates fused (backend.h rnn_forward/backward).
 * Must never: own parameter memory (its owner lays it out), print, exit or read files.
 */
#ifndef BP_RNN_H
#define BP_RNN_H
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "base/log.h"
#include "model/params.h"

typedef enum rnn_cell { RNN_GRU = 0, RNN_LSTM = 1 } rnn_cell;

typedef struct rnn_config {
    rnn_cell cell;
    int input_size, hidden_size, num_layers, bidirectional;
    float dropout;            /* on the output of every layer but the last, in training */
} rnn_config;

/* Layer l's parameters. D = directions, G = gates (GRU 3: r z n; LSTM 4: i f g o), H = hidden,
 * In = input_size for layer 0, D*H above. Names under the owner's PREFIX ("rnn.", "lstm."). */
typedef struct rnn_layer_params {
    float *w_ih;   /* (D, G*H, In) PREFIX.weight_ih_l{l}, then PREFIX.weight_ih_l{l}_reverse */
    float *w_hh;   /* (D, G*H, H)  PREFIX.weight_hh_l{l}[_reverse] */
    float *b_ih;   /* (D, G*H)     PREFIX.bias_ih_l{l}[_reverse] */
    float *b_hh;   /* (D, G*H)     PREFIX.bias_hh_l{l}[_reverse] */
} rnn_layer_params;

/* Forward state of layer l, for N = B*T rows. */
typedef struct rnn_layer_acts {
    float *xproj;  /* (N, D*G*H) W_ih x + b_ih, both directions side by side */
    float *out;    /* (N, D*H)   the layer's output, directions side by side (dropped in place
                                 when a layer follows) */
    float *gates;  /* (D, N, 4H) saved gates (backend.h) */
    float *hprev;  /* (D, N, H)  the state each step started from */
    float *cell;   /* (D, N, H)  LSTM cell state (GRU: none) */
} rnn_layer_acts;

typedef struct rnn_stack {
    rnn_config cfg;
    int max_B, max_T, inference;
    rnn_layer_params *params, *grads;   /* [num_layers]; grads NULL for inference */
    rnn_layer_acts *acts;               /* [num_layers] (inference: shared slots) */
    float *acts_memory;
    float *dxproj, *dhh, *dbuf[2], *scratch;
    int32_t *d_seqs;                    /* device: order [max_B], lengths [max_B] */
    int *sorted_lengths, *order, *lengths;   /* host [max_B] each */
    int B, T;                           /* of the last rnn_set_lengths */
    int training;                       /* of the last forward, and its dropout key */
    uint64_t dropout_key;
    float *h_last;                      /* (B, D*H) last layer's final states, directions side by side */
} rnn_stack;

int rnn_config_check(const rnn_config *cfg, bp_err *err);
/* Floats of all the stack's parameters. */
size_t rnn_param_count(const rnn_config *cfg);

/* A stack for batches up to max_B x max_T whose parameters (and gradients: NULL for inference)
 * are rnn_param_count floats at params / grads, laid out as: every layer's w_ih, w_hh, then
 * every layer's b_ih, b_hh (weights together, biases together, for the optimizer's decay).
 * NULL with err on failure; free with rnn_free. */
rnn_stack *rnn_create(const rnn_config *cfg, backend *be, float *params, float *grads, int max_B, int max_T,
                      int inference, bp_err *err);
void rnn_free(rnn_stack *s, backend *be);

/* Append the stack's tensors, torch-named under prefix, to list (flat layout: the owner's block
 * `memory` at flat_base). Returns 0 or -1 with err. */
int rnn_list_params(const rnn_stack *s, const char *prefix, const float *memory, size_t flat_base,
                    param_list *list, bp_err *err);

/* Torch's initialisation: every weight and bias uniform(-1/sqrt(H), 1/sqrt(H)), into a host array
 * of rnn_param_count floats, from a counter-based draw (seed, index). Can't fail. */
void rnn_init_host(const rnn_config *cfg, float *host, uint64_t seed);

/* Sequence lengths of the next batch from its attention mask (host [B, T]): each row must be
 * 1s then 0s with at least one 1. Returns 0, or -1 with err naming the row. */
int rnn_set_lengths(rnn_stack *s, backend *be, const int32_t *mask, int B, int T, bp_err *err);

/* Forward over x (N, input_size) for the batch of the last rnn_set_lengths. Output: the last
 * layer's acts.out and s->h_last. dropout_key: the key of layer l's output dropout is
 * backend_mix_key(dropout_key, l). */
void rnn_forward(rnn_stack *s, backend *be, const float *x, int training, uint64_t dropout_key);

/* Backward of the last forward: dout (N, D*H) the gradient of the last layer's output (may be
 * NULL), dh_last (B, D*H) that of h_last (may be NULL). Adds the parameter gradients and writes
 * dx (N, input_size), the gradient of x (NULL: not wanted). */
void rnn_backward(rnn_stack *s, backend *be, const float *x, const float *dout, const float *dh_last, float *dx);

/* Zero the stack's gradients. */
void rnn_zero_grad(rnn_stack *s, backend *be);

#endif
