/* core/nn/nn.h: the neural-network layers of libmoco (ResNet encoders and the MoCo head).
 *
 * Style (llm.c): every op works on plain float pointers plus its sizes, with the shapes
 * written next to each argument.  One argument order for every function here, by what the
 * function does with each argument:
 *   1. what it writes: its results (out, dinp, dweight, dbias, loss, dlogits), then what
 *      it writes for later (a workspace; the forward's caches save_mean / save_invstd,
 *      indices, norms; running statistics it updates);
 *   2. what it reads, the data first: in a backward dout, then the forward's tensors (inp,
 *      out or relu_out) and the caches that forward saved; in a forward inp (and a second
 *      operand);
 *   3. the parameters it reads (weight, bias; running statistics in eval mode, read only);
 *   4. the sizes: a size struct (conv2d, batch norm, max-pool: set up and checked once by
 *      their *_size_init) or, for ops with two or three sizes, those ints (N, C, HW / N, IN,
 *      OUT / N, D / N, K);
 *   5. the options (training, momentum, eps).
 * So the same argument sits at the same place in every op of a family (forward,
 * backward_input, backward_params), e.g. batch norm's save_mean is written second-group
 * by the training forward and read after the data by every backward.  Every tensor is
 * contiguous, row-major, NCHW.
 *
 * Forward / backward come in pairs, and the backward is split in two:
 *   <op>_backward_input   OVERWRITES dinp with the gradient of the loss w.r.t. the input;
 *   <op>_backward_params  ACCUMULATES (+=) into dweight / dbias,
 * so that a frozen encoder, or MoCo's key encoder (updated by a moving average, never by
 * gradients), skips the parameter-gradient work entirely.
 *
 * Functions that can reject their arguments return 0 or -1 with moco_last_error() set
 * (they check before touching memory); the rest cannot fail and return void.  Sizes are
 * validated by the *_size_init helpers and by the Lua binding; these functions trust the
 * pointers they are given to be as large as the shape comments say.
 *
 * Threading: the layers split their work over libmoco's thread pool (core/threads.h):
 * convolutions by images, batch norm by channels, elementwise ops by ranges; the sgemm
 * calls inside run single-threaded.  Results never depend on timing; where a sum is split
 * across tasks (conv2d_backward_params) they depend on the number of tasks, which is fixed
 * by the pool size when the sizes are set up. */
#ifndef MOCO_NN_H
#define MOCO_NN_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ conv2d
 * out (N,OC,OH,OW) = conv(inp (N,C,H,W), weight (OC,C,KH,KW)) + bias (OC), with square
 * stride and zero padding (dilation 1, groups 1), PyTorch's nn.Conv2d:
 *     OH = (H + 2*padding - KH) / stride + 1   (floor), and the same for OW.
 * Method: 3x3 convolutions (most of a ResNet) use direct kernels that keep a tile of
 * outputs x channels in vector registers (use_3x3_kernel); their forward sums in the order
 * of PyTorch's oneDNN kernel, so its results are bit-identical.  The rest is im2col +
 * cblas_sgemm: the columns of `images_per_gemm` images are laid side by side so that small
 * late-stage feature maps (4x4 in a CIFAR ResNet) still give sgemm a wide matrix; a 1x1
 * stride-1 unpadded conv with large maps skips im2col and multiplies the input directly;
 * other 1x1 convs only subsample in their im2col. */
typedef struct Conv2dSize {
    int N, C, H, W;          /* input */
    int OC, KH, KW;          /* output channels, kernel */
    int stride, padding;
    int OH, OW;              /* derived */
    int images_per_gemm;     /* set by conv2d_size_init; may be lowered (>= 1) before the
                              * workspace query, e.g. by tests that exercise every path */
    int threads;             /* threads a call may use, each with its own workspace slice:
                              * min(threadpool_size(), N) at conv2d_size_init; may be
                              * lowered (>= 1) before the workspace query */
    int use_3x3_kernel;      /* 1: 3x3 convs of stride 1 or 2 use the vectorised direct
                              * kernels (conv3x3.c) instead of im2col + sgemm (stride 2 only
                              * for forward and backward_params); set by conv2d_size_init
                              * where they apply and are faster; may be cleared, or set for
                              * any 3x3 conv of stride <= 2 and padding <= 2 (tests) */
    int use_winograd;        /* 1: a 3x3 stride-1 padding-1 conv uses Winograd F(4x4, 3x3)
                              * (winograd.c) in all three passes, ahead of the direct
                              * kernels; set by conv2d_size_init where it applies and is faster
                              * and its start-up check passed (conv2d_winograd_status); may be
                              * cleared, or set where it applies (tests) */
} Conv2dSize;

/* Whether the Winograd path passed its start-up check on this CPU (running the check on
 * first call: a small convolution in all three passes against im2col + sgemm); why not, in
 * *why when given.  MOCO_WINOGRAD=0 in the environment turns the path off. */
int conv2d_winograd_status(const char **why);
/* Whether conv2d_size_init may choose Winograd from now on (default 1); returns the
 * previous setting.  0 keeps new convolutions on the exact paths (reference tests). */
int conv2d_set_winograd(int enabled);

/* Fills *s (derived fields included) or returns -1 naming the bad size. */
int conv2d_size_init(Conv2dSize *s, int N, int C, int H, int W, int OC, int KH, int KW, int stride,
                     int padding);
/* Floats of workspace that forward, backward_input and backward_params each need (0 when
 * none: the direct 1x1 path), for s->threads threads.  One workspace may be shared by every
 * conv in a network: nothing in it survives a call. */
size_t conv2d_workspace_size(const Conv2dSize *s);
/* bias may be NULL. */
void conv2d_forward(float *out, float *workspace, const float *inp, const float *weight,
                    const float *bias, const Conv2dSize *s);
/* dinp (N,C,H,W) = gradient w.r.t. the input for dout (N,OC,OH,OW). */
void conv2d_backward_input(float *dinp, float *workspace, const float *dout, const float *weight,
                           const Conv2dSize *s);
/* dweight (OC,C,KH,KW) += ..., dbias (OC) += sum of dout over N,OH,OW (dbias may be NULL). */
void conv2d_backward_params(float *dweight, float *dbias, float *workspace, const float *dout,
                            const float *inp, const Conv2dSize *s);

/* ------------------------------------------------------------------ batch norm
 * BatchNorm2d on (N,C,HW) with HW = H*W, and BatchNorm1d on (N,C) as HW = 1; PyTorch
 * semantics: normalise with the biased batch variance, update running_var with the
 * unbiased one, running = (1 - momentum) * running + momentum * batch, eps inside the sqrt.
 *
 * splits = S > 1 reproduces the official MoCo CIFAR-10 demo's SplitBatchNorm, which runs
 * F.batch_norm on input.view(-1, C*S, H, W): sample n then lands in channel block n mod S,
 * so split s holds samples s, s+S, s+2S, ... (STRIDED, not contiguous slices), each split
 * has its own statistics over N/S samples, and the running statistics become the mean over
 * the S updated copies.  N must be divisible by S.
 *
 * Caches: save_mean and save_invstd (S,C), written by the forward (in eval mode S is
 * treated as 1 and they hold running_mean and 1/sqrt(running_var + eps)). */
typedef struct BatchNormSize {
    int N, C, HW;
    int splits;
    int relu;  /* 1: a ReLU follows, fused: the forward writes max(0, bn(x)), and the
                * backward takes dout through that ReLU first, its mask being the forward's
                * output (relu_out); set after batchnorm_size_init, which clears it */
} BatchNormSize;

/* Checks N, C, HW >= 0 (N, C > 0), splits >= 1 dividing N. */
int batchnorm_size_init(BatchNormSize *s, int N, int C, int HW, int splits);
/* Train mode.  running_mean / running_var (C) are updated in place, or skipped when NULL
 * (track_running_stats=False); weight / bias (C) may be NULL (affine=False).  Returns -1 when
 * a group has a single value (PyTorch: "Expected more than 1 value per channel").
 * residual (N,C,HW), when not NULL, fuses a ResNet block's join into the pass:
 * out = max(0, bn(inp) + residual), bit for bit what add_relu_forward would give after it
 * (s->relu is then ignored; the backward takes the gradient of bn(inp) itself, the caller
 * having taken it through the join).  out may alias residual as well as inp. */
int batchnorm_forward_train(float *out, float *save_mean, float *save_invstd, float *running_mean,
                            float *running_var, const float *inp, const float *residual, const float *weight,
                            const float *bias, const BatchNormSize *s, float momentum, float eps);
/* Eval mode with the running statistics; save_mean / save_invstd (C) and residual as above. */
void batchnorm_forward_eval(float *out, float *save_mean, float *save_invstd, const float *inp,
                            const float *residual, const float *running_mean, const float *running_var,
                            const float *weight, const float *bias, const BatchNormSize *s,
                            float eps);
/* The output of the last forward again (with s->relu: its ReLU too), from its input and the
 * statistics it saved: save_mean / save_invstd (S,C) with S = s->splits (1 for eval
 * caches).  Bit-identical to that forward's output; out may alias inp. */
void batchnorm_forward_saved(float *out, const float *inp, const float *save_mean, const float *save_invstd,
                             const float *weight, const float *bias, const BatchNormSize *s);
/* dinp (N,C,HW).  training selects the formula: in train mode the statistics depend on the
 * input (S groups), in eval mode they are constants (S treated as 1).  dinp may alias dout.
 * out may alias inp in the forwards (a value is read before it is written).  With s->relu
 * the backward entry points need relu_out (the forward's output); it is ignored otherwise
 * and may be NULL. */
void batchnorm_backward_input(float *dinp, const float *dout, const float *relu_out, const float *inp,
                              const float *save_mean, const float *save_invstd,
                              const float *weight, const BatchNormSize *s, int training);
/* dweight (C) += sum dout * xhat, dbias (C) += sum dout; either may be NULL.  No fused ReLU
 * here (s->relu must be 0): take dout through it first (relu_backward_input). */
void batchnorm_backward_params(float *dweight, float *dbias, const float *dout, const float *inp,
                               const float *save_mean, const float *save_invstd,
                               const BatchNormSize *s, int training);
/* Both at once (any output may be NULL, but dinp is needed with s->relu): in train mode the
 * parameter gradients are sums the input gradient computes anyway, so this saves a pass over
 * dout and inp. */
void batchnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *relu_out,
                        const float *inp, const float *save_mean, const float *save_invstd,
                        const float *weight, const BatchNormSize *s, int training);

/* ------------------------------------------------------------------ activations
 * out (n) = max(inp, 0); out may alias inp (in-place ReLU). */
void relu_forward(float *out, const float *inp, size_t n);
/* dinp (n) = dout where out > 0, else 0 (the mask comes from the output, so the input need
 * not be kept); dinp may alias dout. */
void relu_backward_input(float *dinp, const float *dout, const float *out, size_t n);
/* The residual join of a ResNet block: out (n) = max(a + b, 0); out may alias a or b.  Its
 * gradient is relu_backward_input's with out as the mask, given to both branches. */
void add_relu_forward(float *out, const float *a, const float *b, size_t n);
/* a (n) += b (n), split over the pool (the gradients of a block's two branches). */
void add_into(float *a, const float *b, size_t n);

/* ------------------------------------------------------------------ pooling
 * MaxPool2d (dilation 1, floor mode): out (N,C,OH,OW), indices (N,C,OH,OW) hold the argmax
 * as a position in the H*W plane (as PyTorch's return_indices).  Padding acts as -inf, so a
 * window only ever picks an in-bounds element; ties keep the first maximum in scan order and
 * a NaN wins, as PyTorch's CPU kernel does. */
typedef struct MaxPool2dSize {
    int N, C, H, W;
    int kernel, stride, padding;
    int OH, OW;  /* derived */
} MaxPool2dSize;

/* Also enforces PyTorch's padding <= kernel / 2 and a non-empty output. */
int maxpool2d_size_init(MaxPool2dSize *s, int N, int C, int H, int W, int kernel, int stride,
                        int padding);
void maxpool2d_forward(float *out, int32_t *indices, const float *inp, const MaxPool2dSize *s);
/* dinp (N,C,H,W) = scatter-add of dout at the cached indices (overlapping windows add). */
void maxpool2d_backward_input(float *dinp, const float *dout, const int32_t *indices,
                              const MaxPool2dSize *s);

/* AdaptiveAvgPool2d((1,1)) followed by flatten: out (N,C) = mean of inp (N,C,HW) over HW. */
void avgpool_global_forward(float *out, const float *inp, int N, int C, int HW);
/* dinp (N,C,HW) = dout (N,C) / HW, broadcast. */
void avgpool_global_backward_input(float *dinp, const float *dout, int N, int C, int HW);

/* ------------------------------------------------------------------ linear
 * out (N,OUT) = inp (N,IN) @ weight^T + bias, weight (OUT,IN) as in PyTorch; bias may be NULL. */
void linear_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                    int IN, int OUT);
/* dinp (N,IN) = dout (N,OUT) @ weight (OUT,IN). */
void linear_backward_input(float *dinp, const float *dout, const float *weight, int N, int IN,
                           int OUT);
/* dweight (OUT,IN) += dout^T @ inp; dbias (OUT) += sum over N of dout (may be NULL). */
void linear_backward_params(float *dweight, float *dbias, const float *dout, const float *inp,
                            int N, int IN, int OUT);

/* ------------------------------------------------------------------ L2 normalisation
 * F.normalize(inp, dim=1, eps): out (N,D) = inp / max(||inp_row||, eps); norms (N) caches
 * the unclamped row norms, or is NULL when no backward follows.  out may alias inp.  The one
 * row normaliser of libmoco: tensor_normalize_rows_ and moco_bank_update call it. */
void normalize_forward(float *out, float *norms, const float *inp, int N, int D, float eps);
/* dinp (N,D) from dout (N,D), the forward's out and norms.  dinp may alias dout. */
void normalize_backward_input(float *dinp, const float *dout, const float *out, const float *norms,
                              int N, int D, float eps);

/* ------------------------------------------------------------------ loss
 * Softmax cross-entropy with mean reduction over N rows of K logits (N,K) and 0-based class
 * labels (N), int64_t as everywhere in libmoco (torch's target dtype).  *loss = mean of logsumexp(row) - row[label], computed stably; dlogits (N,K)
 * = (softmax - onehot) / N, skipped when NULL, and may alias logits.  Returns -1 (before
 * writing anything) when a label is outside [0, K). */
int cross_entropy_forward_backward(float *loss, float *dlogits, const float *logits,
                                   const int64_t *labels, int N, int K);

#endif
