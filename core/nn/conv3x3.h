/* core/nn/conv3x3.h: private to core/nn: the vectorised 3x3 stride-1 convolution kernels
 * (conv3x3.c) that conv2d.c uses instead of im2col + sgemm where s->use_3x3_kernel is set.
 * Same arguments and semantics as the public conv2d_* functions; the workspace is the one
 * conv2d_workspace_size reports (it includes conv3x3_workspace_size). */
#ifndef MOCO_NN_CONV3X3_H
#define MOCO_NN_CONV3X3_H

#include <stddef.h>

#include "nn/nn.h"

/* Whether the kernels can compute this convolution: 3x3, stride 1 or 2, padding <= 2; the
 * input gradient only for stride 1 (conv2d.c uses im2col for the other). */
int conv3x3_applies(const Conv2dSize *s);
int conv3x3_applies_backward_input(const Conv2dSize *s);
/* Whether they are expected to beat im2col + sgemm here (the conv2d_size_init default). */
int conv3x3_preferred(const Conv2dSize *s);
size_t conv3x3_workspace_size(const Conv2dSize *s);

void conv3x3_forward(float *out, float *workspace, const float *inp, const float *weight,
                     const float *bias, const Conv2dSize *s);
void conv3x3_backward_input(float *dinp, float *workspace, const float *dout, const float *weight,
                            const Conv2dSize *s);
/* dweight only (conv2d_backward_params adds dbias itself). */
void conv3x3_backward_params(float *dweight, float *workspace, const float *dout, const float *inp,
                             const Conv2dSize *s);

#endif
