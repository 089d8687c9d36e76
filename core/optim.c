/* core/optim.c: SGD with PyTorch's exact semantics (see optim.h). */
#include "optim.h"

#include <math.h>

#include "error.h"

int sgd_check_config(const SgdConfig *c) {
    if (!(c->lr >= 0)) return moco_error("SGD: invalid learning rate %g", c->lr);
    if (!(c->momentum >= 0)) return moco_error("SGD: invalid momentum %g", c->momentum);
    if (!(c->weight_decay >= 0)) return moco_error("SGD: invalid weight_decay %g", c->weight_decay);
    if (c->nesterov && (c->momentum <= 0 || c->dampening != 0))
        return moco_error("SGD: nesterov momentum requires a momentum and zero dampening");
    return 0;
}

void sgd_step(float *params, float *momentum_buf, const float *grads, int64_t n, const SgdConfig *c,
              int first_step) {
    const float lr = c->lr, wd = c->weight_decay, mom = c->momentum, damp = 1.0f - c->dampening;
    /* PyTorch writes these as tensor.add(other, alpha=...), whose CPU kernel is a fused
     * multiply-add (vec::fmadd), so we round the same way with fmaf; buf * momentum is a
     * separate mul_ there and here. */
    for (int64_t i = 0; i < n; i++) {
        float d = grads[i];
        if (wd != 0) d = fmaf(wd, params[i], d);
        if (mom != 0) {
            float b = first_step ? d : fmaf(damp, d, mom * momentum_buf[i]);
            momentum_buf[i] = b;
            if (c->nesterov) d = fmaf(mom, b, d);
            else d = b;
        }
        params[i] = fmaf(-lr, d, params[i]);
    }
}
