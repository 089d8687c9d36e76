/* core/nn/winograd.h: private to core/nn: 3x3 stride-1 "same" convolutions by Winograd's
 * minimal filtering F(4x4, 3x3) (winograd.c), used by conv2d.c where s->use_winograd is
 * set.  Same arguments and semantics as the public conv2d_* functions; the workspace is the
 * one conv2d_workspace_size reports (it includes winograd_workspace_size). */
#ifndef MOCO_NN_WINOGRAD_H
#define MOCO_NN_WINOGRAD_H

#include <stddef.h>

#include "nn/nn.h"

/* Whether the method computes this convolution (3x3, stride 1, padding 1) and the product
 * kernel it needs is in use (core/gemm.h: moco_gemm_tile). */
int winograd_applies(const Conv2dSize *s);
size_t winograd_workspace_size(const Conv2dSize *s);

void winograd_forward(float *out, float *workspace, const float *inp, const float *weight, const float *bias,
                      const Conv2dSize *s);
void winograd_backward_input(float *dinp, float *workspace, const float *dout, const float *weight,
                             const Conv2dSize *s);
/* dweight only (conv2d_backward_params adds dbias itself). */
void winograd_backward_params(float *dweight, float *workspace, const float *dout, const float *inp,
                              const Conv2dSize *s);

#endif
