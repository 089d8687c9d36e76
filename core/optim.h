/* core/optim.h: optimisers over contiguous parameter blocks.
 *
 * A network keeps all its parameters in one float block and all gradients in another
 * (same layout), so an optimiser step is one pass over three arrays. */
#ifndef MOCO_OPTIM_H
#define MOCO_OPTIM_H

#include <stdint.h>

typedef struct SgdConfig {
    float lr;
    float momentum;      /* 0 = plain SGD (no buffer needed) */
    float dampening;
    float weight_decay;
    int nesterov;        /* requires momentum > 0 and dampening == 0, as PyTorch */
} SgdConfig;

/* Validates a configuration as torch.optim.SGD's constructor does. */
int sgd_check_config(const SgdConfig *c);

/* torch.optim.SGD's update, element by element and in PyTorch's order of float operations:
 *   d = g + wd * p
 *   buf = first_step ? d : momentum * buf + (1 - dampening) * d
 *   d = nesterov ? d + momentum * buf : buf
 *   p = p - lr * d
 * params, grads: (n,); momentum_buf: (n,) or NULL when momentum == 0. */
void sgd_step(float *params, float *momentum_buf, const float *grads, int64_t n, const SgdConfig *c,
              int first_step);

#endif
