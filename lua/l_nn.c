/* lua/l_nn.c: the layer functions of core/nn as `moco._nn` (moco.core.nn), the base on which
 * the Lua module moco.nn (Sequential, ResNets, SGD) is written.
 *
 * Conventions
 *  - Tensors are moco.Tensors, NCHW.  Layer arguments (stride, padding, kernel, splits) are
 *    sizes, not positions.  Class labels are 0-based VALUES (as torchvision datasets give),
 *    and max-pool indices are PyTorch's (0-based positions in the H*W plane).
 *  - Every shape is checked before anything is allocated; errors name the function, the
 *    argument and both shapes.
 *  - Outputs are returned as new tensors, or written into an optional preallocated tensor
 *    given as the last argument (shape must match exactly; it must not overlap the inputs,
 *    except where "may be" says so), which avoids allocation churn in a training loop.
 *  - *_backward_input returns the input gradient; *_backward_params ACCUMULATES into the
 *    gradient tensors it is given (zero them yourself) and returns nothing.
 *  - Caches (batch-norm statistics, max-pool indices, row norms) are tensors returned by the
 *    forward, held by the caller and passed back to the backward.
 *  - Conv workspace: one scratch buffer per Lua state, shared by every call and grown on
 *    demand (im2col columns do not outlive a call).  workspace_bytes() reports its size and
 *    free_workspace() releases it (a later call allocates it again).
 *
 * Functions (optional arguments in brackets, "|nil" = may be nil)
 *  conv2d_forward(input (N,C,H,W), weight (OC,C,KH,KW), bias (OC)|nil [, stride=1
 *                 [, padding=0 [, out]]])                                    -> out (N,OC,OH,OW)
 *  conv2d_backward_input(grad_out (N,OC,OH,OW), weight, input_shape, stride, padding
 *                 [, grad_input])                                            -> grad_input (N,C,H,W)
 *      input_shape: a table {N, C, H, W} or the input tensor itself
 *  conv2d_backward_params(grad_out, input, grad_weight (OC,C,KH,KW), grad_bias (OC)|nil,
 *                 stride, padding)                                            accumulates
 *  batchnorm_forward(input (N,C[,H,W]), weight (C)|nil, bias (C)|nil, running_mean (C)|nil,
 *                 running_var (C)|nil, training [, momentum=0.1 [, eps=1e-5 [, splits=1
 *                 [, out [, relu [, residual]]]]]])  -> out, save_mean (S,C), save_invstd (S,C)
 *      training: running stats updated in place (skipped when nil); statistics per split,
 *      S = splits (sample n is in split n mod S, as the MoCo demo's SplitBatchNorm).
 *      eval: running stats required, S = 1.  out may be input (in place).  relu: a fused
 *      ReLU, out = max(0, bn(input)).  residual (the input's shape): a ResNet block's join
 *      fused, out = max(0, bn(input) + residual) (relu is then ignored; out may be it).
 *  batchnorm_forward_saved(input, save_mean, save_invstd, weight|nil, bias|nil, out [, relu])
 *                 -> out: the output of the forward that saved these statistics, recomputed
 *                    (bit for bit) from its input; out may be input
 *  batchnorm_backward_input(grad_out, input, save_mean, save_invstd, weight|nil, training
 *                 [, grad_input [, relu_output]])  -> grad_input (grad_input may be grad_out)
 *      relu_output: the forward had a fused ReLU and this is its output (the mask)
 *  batchnorm_backward_params(grad_out, input, save_mean, save_invstd, grad_weight|nil,
 *                 grad_bias|nil)                                              accumulates
 *  batchnorm_backward(grad_out, input, save_mean, save_invstd, weight|nil, training,
 *                 grad_weight|nil, grad_bias|nil [, grad_input [, relu_output]])
 *                                                 -> grad_input, and accumulates
 *      both of the above in one pass (train mode: the parameter gradients are sums the input
 *      gradient needs anyway), for modules that want both
 *  relu_forward(input [, out])                    -> out (out may be input: in place)
 *  relu_backward_input(grad_out, output [, grad_input])
 *                                                 -> grad_input (grad_input may be grad_out)
 *  add_relu_forward(a, b [, out])                 -> out = max(a + b, 0) (out may be a or b)
 *  add_into(a, b)                                 -> a, after a += b (same shapes)
 *  maxpool2d_forward(input (N,C,H,W), kernel [, stride=kernel [, padding=0 [, out]]])
 *                                                 -> out (N,C,OH,OW), indices (N,C,OH,OW)
 *  maxpool2d_backward_input(grad_out, indices, input_shape, kernel, stride, padding
 *                 [, grad_input])                 -> grad_input (N,C,H,W)
 *  avgpool_global_forward(input (N,C,H,W) [, out])            -> out (N,C)
 *      (AdaptiveAvgPool2d((1,1)) then flatten)
 *  avgpool_global_backward_input(grad_out (N,C), input_shape [, grad_input]) -> grad_input
 *  linear_forward(input (N,IN), weight (OUT,IN), bias (OUT)|nil [, out]) -> out (N,OUT)
 *  linear_backward_input(grad_out (N,OUT), weight [, grad_input])         -> grad_input (N,IN)
 *  linear_backward_params(grad_out, input, grad_weight, grad_bias|nil)       accumulates
 *  normalize_forward(input (N,D) [, eps=1e-12 [, out]])
 *                                                 -> out (N,D), norms (N) (out may be input)
 *  normalize_backward_input(grad_out, output, norms [, eps=1e-12 [, grad_input]])
 *                                                 -> grad_input (grad_input may be grad_out)
 *  cross_entropy(logits (N,K), labels (N) [, grad_logits | false])
 *                                                 -> loss (number), grad_logits (N,K) | nil
 *      mean reduction; labels hold integer values in [0, K); false skips the gradient;
 *      grad_logits may be logits.
 *  workspace_bytes()                              -> integer
 *  free_workspace()
 *  set_winograd(enabled)  -> previous setting; whether convolutions set up from now on may
 *                         use Winograd F(4x4, 3x3) (core/nn/winograd.c) where it is faster;
 *                         false keeps every convolution on the exact direct / im2col paths
 *  winograd_status()      -> available (boolean), why (string): the start-up check's verdict
 *  gemm_backend()         -> string: which matrix kernel moco_sgemm runs (core/gemm.h), and why
 */
#include <lauxlib.h>

#include "gemm.h"
#include <lua.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "error.h"
#include "lmoco.h"
#include "nn/nn.h"
#include "threads.h"

#define LMOCO_STR_(x) #x
#define LMOCO_STR(x) LMOCO_STR_(x)

/* ------------------------------------------------------------ helpers */

typedef struct Shape {
    int ndim;
    int64_t d[TENSOR_MAX_DIMS];
} Shape;

static const char *shape_text(lua_State *L, int ndim, const int64_t *d) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '[');
    for (int i = 0; i < ndim; i++) {
        if (i) luaL_addstring(&b, ", ");
        lua_pushfstring(L, "%I", (lua_Integer)d[i]);
        luaL_addvalue(&b);
    }
    luaL_addchar(&b, ']');
    luaL_pushresult(&b);
    return lua_tostring(L, -1); /* stays on the stack until the error is raised */
}
static const char *tshape(lua_State *L, const Tensor *t) { return shape_text(L, t->ndim, t->shape); }

static Tensor *opt_tensor(lua_State *L, int idx) {
    return lua_isnoneornil(L, idx) ? NULL : lmoco_checktensor(L, idx);
}

/* Sizes are int in core/nn; refuse anything larger rather than wrap. */
static int as_int(lua_State *L, const char *fn, int64_t v) {
    if (v > 0x7fffffff) luaL_error(L, "%s: size %I is too large", fn, (lua_Integer)v);
    return (int)v;
}

static int check_size_arg(lua_State *L, int idx, const char *fn, const char *what, lua_Integer dflt) {
    lua_Integer v = luaL_optinteger(L, idx, dflt);
    if (v < 0 || v > 0x7fffffff) luaL_error(L, "%s: %s must be a non-negative integer, got %I", fn, what, v);
    return (int)v;
}

static void check_ndim(lua_State *L, const char *fn, const char *arg, const Tensor *t, int ndim,
                       const char *layout) {
    if (t->ndim != ndim)
        luaL_error(L, "%s: %s should be %d-d %s, got %s", fn, arg, ndim, layout, tshape(L, t));
}

/* t must have exactly shape s. */
static void check_shape(lua_State *L, const char *fn, const char *arg, const Tensor *t, const Shape *s,
                        const char *why) {
    int ok = t->ndim == s->ndim;
    for (int i = 0; ok && i < s->ndim; i++) ok = t->shape[i] == s->d[i];
    if (!ok) {
        const char *want = shape_text(L, s->ndim, s->d);
        luaL_error(L, "%s: %s %s should be %s%s%s", fn, arg, tshape(L, t), want, why ? " " : "", why ? why : "");
    }
}

/* A shape argument: a table of sizes or a tensor whose shape is used. */
static Shape check_shape_arg(lua_State *L, int idx, const char *fn, const char *arg) {
    Shape s;
    Tensor *t = lmoco_totensor(L, idx);
    if (t) {
        s.ndim = t->ndim;
        memcpy(s.d, t->shape, sizeof s.d);
        return s;
    }
    if (!lua_istable(L, idx)) luaL_error(L, "%s: %s should be a shape table or a tensor, got %s", fn, arg,
                                         luaL_typename(L, idx));
    s.ndim = lmoco_checkshape(L, idx, s.d);
    return s;
}

static int overlaps(const Tensor *a, const Tensor *b) {
    if (!a || !b || !a->numel || !b->numel) return 0;
    return a->data < b->data + b->numel && b->data < a->data + a->numel;
}

/* A preallocated output must not overlap an input, unless allowed to be that exact input. */
static void check_no_overlap(lua_State *L, const char *fn, const char *outname, const Tensor *out,
                             const char *inname, const Tensor *in, int may_be_same) {
    if (!overlaps(out, in)) return;
    if (may_be_same && out->data == in->data && out->numel == in->numel) return;
    luaL_error(L, "%s: %s shares memory with %s%s", fn, outname, inname,
               may_be_same ? " (only the very same tensor is allowed)" : "");
}

/* Pushes the output: the tensor at idx when one is given (checked against s), else a new
 * uninitialised tensor of shape s (every function here writes all of it). */
static Tensor *push_out(lua_State *L, int idx, const char *fn, const char *arg, const Shape *s) {
    Tensor *given = idx > 0 ? opt_tensor(L, idx) : NULL; /* idx 0: always a new tensor */
    if (given) {
        check_shape(L, fn, arg, given, s, NULL);
        lua_pushvalue(L, idx);
        return given;
    }
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_empty(s->ndim, s->d));
    return box->t;
}

/* The per-state scratch buffer (conv workspace, int32 indices and int64 labels), returned
 * 64-byte aligned.  Lua aligns userdata to 16 bytes only; the convolutions' workspace rows
 * (im2col columns, Winograd's tiles and transformed kernels) are sized in whole vectors,
 * so a buffer off by 16 made every other vector load straddle two cache lines, and the
 * Winograd kernel transform's streaming stores need the alignment. */
static const char scratch_key = 's';
#define SCRATCH_ALIGN 64

static void *scratch(lua_State *L, size_t bytes) {
    if (bytes > SIZE_MAX - SCRATCH_ALIGN) luaL_error(L, "a scratch buffer of %I bytes does not fit in memory", (lua_Integer)bytes);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &scratch_key);
    void *p = lua_touserdata(L, -1);
    size_t have = p ? lua_rawlen(L, -1) : 0;
    lua_pop(L, 1);
    if (!p || have < bytes + SCRATCH_ALIGN) {
        lua_pushnil(L);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &scratch_key); /* let the old one go first */
        p = lmoco_newarray(L, bytes + SCRATCH_ALIGN, 1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &scratch_key); /* still referenced from the registry */
    }
    return (void *)(((uintptr_t)p + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN);
}

static int l_workspace_bytes(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &scratch_key);
    lua_pushinteger(L, lua_isuserdata(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : 0);
    return 1;
}

static int l_free_workspace(lua_State *L) {
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &scratch_key);
    return 0;
}

/* ------------------------------------------------------------ conv2d */

/* Shapes of a convolution from the input shape and the weight; fills *cs. */
static void conv_setup(lua_State *L, const char *fn, const Shape *in, const Tensor *weight, int stride,
                       int padding, Conv2dSize *cs) {
    if (in->ndim != 4) luaL_error(L, "%s: input should be 4-d (N, C, H, W), got %s", fn, shape_text(L, in->ndim, in->d));
    check_ndim(L, fn, "weight", weight, 4, "(out_channels, in_channels, KH, KW)");
    if (weight->shape[1] != in->d[1])
        luaL_error(L, "%s: weight %s has %I input channels but input %s has %I", fn, tshape(L, weight),
                   (lua_Integer)weight->shape[1], shape_text(L, in->ndim, in->d), (lua_Integer)in->d[1]);
    if (conv2d_size_init(cs, as_int(L, fn, in->d[0]), as_int(L, fn, in->d[1]), as_int(L, fn, in->d[2]),
                         as_int(L, fn, in->d[3]), as_int(L, fn, weight->shape[0]),
                         as_int(L, fn, weight->shape[2]), as_int(L, fn, weight->shape[3]), stride, padding))
        luaL_error(L, "%s: %s (input %s, weight %s)", fn, moco_last_error(), shape_text(L, in->ndim, in->d),
                   tshape(L, weight));
}

/* bias (n), one per `of` of the weight `owner` (named wname). */
static void check_bias(lua_State *L, const char *fn, const char *arg, const Tensor *bias, int64_t n,
                       const char *of, const char *wname, const Tensor *owner) {
    if (bias && (bias->ndim != 1 || bias->shape[0] != n))
        luaL_error(L, "%s: %s %s should be [%I] (one per %s of %s %s)", fn, arg, tshape(L, bias),
                   (lua_Integer)n, of, wname, tshape(L, owner));
}

static Shape conv_out_shape(const Conv2dSize *cs) {
    Shape s = {4, {cs->N, cs->OC, cs->OH, cs->OW}};
    return s;
}

static int l_conv2d_forward(lua_State *L) {
    const char *fn = "conv2d_forward";
    Tensor *inp = lmoco_checktensor(L, 1), *weight = lmoco_checktensor(L, 2), *bias = opt_tensor(L, 3);
    int stride = check_size_arg(L, 4, fn, "stride", 1), padding = check_size_arg(L, 5, fn, "padding", 0);
    Shape in = {inp->ndim, {0}};
    memcpy(in.d, inp->shape, sizeof in.d);
    Conv2dSize cs;
    conv_setup(L, fn, &in, weight, stride, padding, &cs);
    check_bias(L, fn, "bias", bias, cs.OC, "output channel", "weight", weight);
    Shape os = conv_out_shape(&cs);
    Tensor *out = push_out(L, 6, fn, "out", &os);
    check_no_overlap(L, fn, "out", out, "input", inp, 0);
    check_no_overlap(L, fn, "out", out, "weight", weight, 0);
    check_no_overlap(L, fn, "out", out, "bias", bias, 0);
    float *ws = scratch(L, conv2d_workspace_size(&cs) * sizeof(float));
    conv2d_forward(out->data, ws, inp->data, weight->data, bias ? bias->data : NULL, &cs);
    return 1;
}

static int l_conv2d_backward_input(lua_State *L) {
    const char *fn = "conv2d_backward_input";
    Tensor *dout = lmoco_checktensor(L, 1), *weight = lmoco_checktensor(L, 2);
    Shape in = check_shape_arg(L, 3, fn, "input_shape");
    int stride = check_size_arg(L, 4, fn, "stride", 1), padding = check_size_arg(L, 5, fn, "padding", 0);
    Conv2dSize cs;
    conv_setup(L, fn, &in, weight, stride, padding, &cs);
    Shape os = conv_out_shape(&cs);
    check_shape(L, fn, "grad_out", dout, &os, "(the output shape for this input and weight)");
    Tensor *dinp = push_out(L, 6, fn, "grad_input", &in);
    check_no_overlap(L, fn, "grad_input", dinp, "grad_out", dout, 0);
    check_no_overlap(L, fn, "grad_input", dinp, "weight", weight, 0);
    float *ws = scratch(L, conv2d_workspace_size(&cs) * sizeof(float));
    conv2d_backward_input(dinp->data, ws, dout->data, weight->data, &cs);
    return 1;
}

static int l_conv2d_backward_params(lua_State *L) {
    const char *fn = "conv2d_backward_params";
    Tensor *dout = lmoco_checktensor(L, 1), *inp = lmoco_checktensor(L, 2);
    Tensor *dweight = lmoco_checktensor(L, 3), *dbias = opt_tensor(L, 4);
    int stride = check_size_arg(L, 5, fn, "stride", 1), padding = check_size_arg(L, 6, fn, "padding", 0);
    Shape in = {inp->ndim, {0}};
    memcpy(in.d, inp->shape, sizeof in.d);
    Conv2dSize cs;
    conv_setup(L, fn, &in, dweight, stride, padding, &cs);
    check_bias(L, fn, "grad_bias", dbias, cs.OC, "output channel", "grad_weight", dweight);
    Shape os = conv_out_shape(&cs);
    check_shape(L, fn, "grad_out", dout, &os, "(the output shape for this input and grad_weight)");
    check_no_overlap(L, fn, "grad_weight", dweight, "grad_out", dout, 0);
    check_no_overlap(L, fn, "grad_weight", dweight, "input", inp, 0);
    check_no_overlap(L, fn, "grad_bias", dbias, "grad_out", dout, 0);
    float *ws = scratch(L, conv2d_workspace_size(&cs) * sizeof(float));
    conv2d_backward_params(dweight->data, dbias ? dbias->data : NULL, ws, dout->data, inp->data, &cs);
    return 0;
}

/* ------------------------------------------------------------ batch norm */

/* (N, C, rest...) as N, C, HW. */
static void bn_dims(lua_State *L, const char *fn, const Tensor *inp, int *N, int *C, int *HW) {
    if (inp->ndim < 2 || inp->ndim > 4)
        luaL_error(L, "%s: input should be (N, C), (N, C, L) or (N, C, H, W), got %s", fn, tshape(L, inp));
    int64_t hw = 1;
    for (int i = 2; i < inp->ndim; i++) hw *= inp->shape[i];
    *N = as_int(L, fn, inp->shape[0]);
    *C = as_int(L, fn, inp->shape[1]);
    *HW = as_int(L, fn, hw);
    if (*N < 1 || *C < 1 || *HW < 1) luaL_error(L, "%s: input %s is empty", fn, tshape(L, inp));
}

static void check_per_channel(lua_State *L, const char *fn, const char *arg, const Tensor *t, int C,
                              const Tensor *inp) {
    if (t && (t->ndim != 1 || t->shape[0] != C))
        luaL_error(L, "%s: %s %s should be [%d] (one per channel of input %s)", fn, arg, tshape(L, t), C,
                   tshape(L, inp));
}

static int l_batchnorm_forward(lua_State *L) {
    const char *fn = "batchnorm_forward";
    Tensor *inp = lmoco_checktensor(L, 1), *weight = opt_tensor(L, 2), *bias = opt_tensor(L, 3);
    Tensor *rm = opt_tensor(L, 4), *rv = opt_tensor(L, 5);
    int training = lua_toboolean(L, 6);
    float momentum = (float)luaL_optnumber(L, 7, 0.1), eps = (float)luaL_optnumber(L, 8, 1e-5);
    lua_Integer splits = luaL_optinteger(L, 9, 1);
    int N, C, HW;
    bn_dims(L, fn, inp, &N, &C, &HW);
    check_per_channel(L, fn, "weight", weight, C, inp);
    check_per_channel(L, fn, "bias", bias, C, inp);
    check_per_channel(L, fn, "running_mean", rm, C, inp);
    check_per_channel(L, fn, "running_var", rv, C, inp);
    if (!rm != !rv) luaL_error(L, "%s: give both running_mean and running_var, or neither", fn);
    if (!training && !rm) luaL_error(L, "%s: eval mode needs running_mean and running_var", fn);
    if (!(eps > 0)) luaL_error(L, "%s: eps must be positive, got %f", fn, (double)eps);
    if (splits < 1 || splits > N) luaL_error(L, "%s: splits must be between 1 and the batch size %d, got %I", fn, N, splits);
    if (!training) splits = 1; /* eval normalises with the running statistics only */
    BatchNormSize bs;
    if (batchnorm_size_init(&bs, N, C, HW, (int)splits))
        luaL_error(L, "%s: %s (input %s)", fn, moco_last_error(), tshape(L, inp));
    if (training && (int64_t)(N / splits) * HW < 2)
        luaL_error(L, "%s: expected more than 1 value per channel when training, got input %s with splits %I",
                   fn, tshape(L, inp), splits);
    Shape is = {inp->ndim, {0}}, ss = {2, {splits, C}};
    memcpy(is.d, inp->shape, sizeof is.d);
    Tensor *out = push_out(L, 10, fn, "out", &is);
    check_no_overlap(L, fn, "out", out, "input", inp, 1);
    bs.relu = lua_toboolean(L, 11);
    Tensor *res = opt_tensor(L, 12);
    if (res && !tensor_same_shape(res, inp))
        luaL_error(L, "%s: residual %s should have the shape of input %s", fn, tshape(L, res), tshape(L, inp));
    if (res) check_no_overlap(L, fn, "out", out, "residual", res, 1);
    const float *r = res ? res->data : NULL;
    LTensor *mbox = lmoco_newbox(L);
    lmoco_settensor(L, mbox, tensor_empty(2, ss.d));
    LTensor *vbox = lmoco_newbox(L);
    lmoco_settensor(L, vbox, tensor_empty(2, ss.d));
    const float *w = weight ? weight->data : NULL, *b = bias ? bias->data : NULL;
    if (training) {
        if (batchnorm_forward_train(out->data, mbox->t->data, vbox->t->data, rm ? rm->data : NULL,
                                    rv ? rv->data : NULL, inp->data, r, w, b, &bs, momentum, eps))
            return lmoco_error(L);
    } else {
        batchnorm_forward_eval(out->data, mbox->t->data, vbox->t->data, inp->data, r, rm->data, rv->data, w, b,
                               &bs, eps);
    }
    return 3;
}

/* Checks the caches against the input and returns the size with S = save_mean's rows. */
static BatchNormSize bn_backward_setup(lua_State *L, const char *fn, const Tensor *dout, const Tensor *inp,
                                       const Tensor *mean, const Tensor *invstd, int training);

static int l_batchnorm_forward_saved(lua_State *L) {
    const char *fn = "batchnorm_forward_saved";
    Tensor *inp = lmoco_checktensor(L, 1), *mean = lmoco_checktensor(L, 2), *invstd = lmoco_checktensor(L, 3);
    Tensor *weight = opt_tensor(L, 4), *bias = opt_tensor(L, 5), *out = lmoco_checktensor(L, 6);
    BatchNormSize bs = bn_backward_setup(L, fn, out, inp, mean, invstd, 1);
    check_per_channel(L, fn, "weight", weight, bs.C, inp);
    check_per_channel(L, fn, "bias", bias, bs.C, inp);
    check_no_overlap(L, fn, "out", out, "input", inp, 1);
    bs.relu = lua_toboolean(L, 7);
    batchnorm_forward_saved(out->data, inp->data, mean->data, invstd->data, weight ? weight->data : NULL,
                            bias ? bias->data : NULL, &bs);
    lua_pushvalue(L, 6);
    return 1;
}

static BatchNormSize bn_backward_setup(lua_State *L, const char *fn, const Tensor *dout, const Tensor *inp,
                                       const Tensor *mean, const Tensor *invstd, int training) {
    int N, C, HW;
    bn_dims(L, fn, inp, &N, &C, &HW);
    if (!tensor_same_shape(dout, inp))
        luaL_error(L, "%s: grad_out %s should have the shape of input %s", fn, tshape(L, dout), tshape(L, inp));
    if (mean->ndim != 2 || mean->shape[1] != C || mean->shape[0] < 1 || N % mean->shape[0])
        luaL_error(L, "%s: save_mean %s should be (splits, %d) with splits dividing the batch of input %s", fn,
                   tshape(L, mean), C, tshape(L, inp));
    if (!tensor_same_shape(invstd, mean))
        luaL_error(L, "%s: save_invstd %s should have the shape of save_mean %s", fn, tshape(L, invstd),
                   tshape(L, mean));
    if (!training && mean->shape[0] != 1)
        luaL_error(L, "%s: save_mean %s has %I splits but eval-mode statistics have 1 (was the forward in "
                   "training mode?)", fn, tshape(L, mean), (lua_Integer)mean->shape[0]);
    BatchNormSize bs;
    batchnorm_size_init(&bs, N, C, HW, (int)mean->shape[0]);
    return bs;
}

/* The optional relu_output at idx: the output of a forward with a fused ReLU, its mask.
 * Sets bs->relu when given. */
static const Tensor *bn_relu_output(lua_State *L, int idx, const char *fn, const Tensor *dinp, const Tensor *inp,
                                    BatchNormSize *bs) {
    const Tensor *r = opt_tensor(L, idx);
    if (!r) return NULL;
    if (!tensor_same_shape(r, inp))
        luaL_error(L, "%s: relu_output %s should have the shape of input %s", fn, tshape(L, r), tshape(L, inp));
    check_no_overlap(L, fn, "grad_input", dinp, "relu_output", r, 0);
    bs->relu = 1;
    return r;
}

static int l_batchnorm_backward_input(lua_State *L) {
    const char *fn = "batchnorm_backward_input";
    Tensor *dout = lmoco_checktensor(L, 1), *inp = lmoco_checktensor(L, 2);
    Tensor *mean = lmoco_checktensor(L, 3), *invstd = lmoco_checktensor(L, 4), *weight = opt_tensor(L, 5);
    int training = lua_toboolean(L, 6);
    BatchNormSize bs = bn_backward_setup(L, fn, dout, inp, mean, invstd, training);
    check_per_channel(L, fn, "weight", weight, bs.C, inp);
    Shape is = {inp->ndim, {0}};
    memcpy(is.d, inp->shape, sizeof is.d);
    Tensor *dinp = push_out(L, 7, fn, "grad_input", &is);
    check_no_overlap(L, fn, "grad_input", dinp, "grad_out", dout, 1);
    check_no_overlap(L, fn, "grad_input", dinp, "input", inp, 0);
    const Tensor *relu_out = bn_relu_output(L, 8, fn, dinp, inp, &bs);
    batchnorm_backward_input(dinp->data, dout->data, relu_out ? relu_out->data : NULL, inp->data, mean->data,
                             invstd->data, weight ? weight->data : NULL, &bs, training);
    return 1;
}

static int l_batchnorm_backward_params(lua_State *L) {
    const char *fn = "batchnorm_backward_params";
    Tensor *dout = lmoco_checktensor(L, 1), *inp = lmoco_checktensor(L, 2);
    Tensor *mean = lmoco_checktensor(L, 3), *invstd = lmoco_checktensor(L, 4);
    Tensor *dweight = opt_tensor(L, 5), *dbias = opt_tensor(L, 6);
    BatchNormSize bs = bn_backward_setup(L, fn, dout, inp, mean, invstd, 1);
    check_per_channel(L, fn, "grad_weight", dweight, bs.C, inp);
    check_per_channel(L, fn, "grad_bias", dbias, bs.C, inp);
    /* S = save_mean's rows covers both modes: eval caches have one row. */
    batchnorm_backward_params(dweight ? dweight->data : NULL, dbias ? dbias->data : NULL, dout->data,
                              inp->data, mean->data, invstd->data, &bs, 1);
    return 0;
}

static int l_batchnorm_backward(lua_State *L) {
    const char *fn = "batchnorm_backward";
    Tensor *dout = lmoco_checktensor(L, 1), *inp = lmoco_checktensor(L, 2);
    Tensor *mean = lmoco_checktensor(L, 3), *invstd = lmoco_checktensor(L, 4), *weight = opt_tensor(L, 5);
    int training = lua_toboolean(L, 6);
    Tensor *dweight = opt_tensor(L, 7), *dbias = opt_tensor(L, 8);
    BatchNormSize bs = bn_backward_setup(L, fn, dout, inp, mean, invstd, training);
    check_per_channel(L, fn, "weight", weight, bs.C, inp);
    check_per_channel(L, fn, "grad_weight", dweight, bs.C, inp);
    check_per_channel(L, fn, "grad_bias", dbias, bs.C, inp);
    Shape is = {inp->ndim, {0}};
    memcpy(is.d, inp->shape, sizeof is.d);
    Tensor *dinp = push_out(L, 9, fn, "grad_input", &is);
    check_no_overlap(L, fn, "grad_input", dinp, "grad_out", dout, 1);
    check_no_overlap(L, fn, "grad_input", dinp, "input", inp, 0);
    check_no_overlap(L, fn, "grad_input", dinp, "grad_weight", dweight, 0);
    check_no_overlap(L, fn, "grad_input", dinp, "grad_bias", dbias, 0);
    const Tensor *relu_out = bn_relu_output(L, 10, fn, dinp, inp, &bs);
    batchnorm_backward(dinp->data, dweight ? dweight->data : NULL, dbias ? dbias->data : NULL, dout->data,
                       relu_out ? relu_out->data : NULL, inp->data, mean->data, invstd->data,
                       weight ? weight->data : NULL, &bs, training);
    return 1;
}

/* ------------------------------------------------------------ relu */

static int l_relu_forward(lua_State *L) {
    const char *fn = "relu_forward";
    Tensor *inp = lmoco_checktensor(L, 1);
    Shape is = {inp->ndim, {0}};
    memcpy(is.d, inp->shape, sizeof is.d);
    Tensor *out = push_out(L, 2, fn, "out", &is);
    check_no_overlap(L, fn, "out", out, "input", inp, 1);
    relu_forward(out->data, inp->data, (size_t)inp->numel);
    return 1;
}

static int l_relu_backward_input(lua_State *L) {
    const char *fn = "relu_backward_input";
    Tensor *dout = lmoco_checktensor(L, 1), *out = lmoco_checktensor(L, 2);
    if (!tensor_same_shape(dout, out))
        luaL_error(L, "%s: grad_out %s should have the shape of output %s", fn, tshape(L, dout), tshape(L, out));
    Shape s = {out->ndim, {0}};
    memcpy(s.d, out->shape, sizeof s.d);
    Tensor *dinp = push_out(L, 3, fn, "grad_input", &s);
    check_no_overlap(L, fn, "grad_input", dinp, "grad_out", dout, 1);
    check_no_overlap(L, fn, "grad_input", dinp, "output", out, 0);
    relu_backward_input(dinp->data, dout->data, out->data, (size_t)out->numel);
    return 1;
}

static int l_add_relu_forward(lua_State *L) {
    const char *fn = "add_relu_forward";
    Tensor *a = lmoco_checktensor(L, 1), *b = lmoco_checktensor(L, 2);
    if (!tensor_same_shape(a, b))
        luaL_error(L, "%s: b %s should have the shape of a %s", fn, tshape(L, b), tshape(L, a));
    Shape s = {a->ndim, {0}};
    memcpy(s.d, a->shape, sizeof s.d);
    Tensor *out = push_out(L, 3, fn, "out", &s);
    check_no_overlap(L, fn, "out", out, "a", a, 1);
    check_no_overlap(L, fn, "out", out, "b", b, 1);
    add_relu_forward(out->data, a->data, b->data, (size_t)a->numel);
    return 1;
}

static int l_add_into(lua_State *L) {
    const char *fn = "add_into";
    Tensor *a = lmoco_checktensor(L, 1), *b = lmoco_checktensor(L, 2);
    if (!tensor_same_shape(a, b))
        luaL_error(L, "%s: b %s should have the shape of a %s", fn, tshape(L, b), tshape(L, a));
    check_no_overlap(L, fn, "a", a, "b", b, 0);
    add_into(a->data, b->data, (size_t)a->numel);
    lua_settop(L, 1);
    return 1;
}

/* ------------------------------------------------------------ pooling */

static void maxpool_setup(lua_State *L, const char *fn, const Shape *in, int k, int st, int pad,
                          MaxPool2dSize *ms) {
    if (in->ndim != 4)
        luaL_error(L, "%s: input should be 4-d (N, C, H, W), got %s", fn, shape_text(L, in->ndim, in->d));
    if (maxpool2d_size_init(ms, as_int(L, fn, in->d[0]), as_int(L, fn, in->d[1]), as_int(L, fn, in->d[2]),
                            as_int(L, fn, in->d[3]), k, st, pad))
        luaL_error(L, "%s: %s (input %s)", fn, moco_last_error(), shape_text(L, in->ndim, in->d));
    /* indices travel as float tensors: exact only below 2^24 */
    if ((int64_t)ms->H * ms->W > (1 << 24))
        luaL_error(L, "%s: planes of %dx%d are too large for float indices", fn, ms->H, ms->W);
}

static int l_maxpool2d_forward(lua_State *L) {
    const char *fn = "maxpool2d_forward";
    Tensor *inp = lmoco_checktensor(L, 1);
    int k = check_size_arg(L, 2, fn, "kernel", 0);
    int st = check_size_arg(L, 3, fn, "stride", k), pad = check_size_arg(L, 4, fn, "padding", 0);
    Shape in = {inp->ndim, {0}};
    memcpy(in.d, inp->shape, sizeof in.d);
    MaxPool2dSize ms;
    maxpool_setup(L, fn, &in, k, st, pad, &ms);
    Shape os = {4, {ms.N, ms.C, ms.OH, ms.OW}};
    Tensor *out = push_out(L, 5, fn, "out", &os);
    check_no_overlap(L, fn, "out", out, "input", inp, 0);
    LTensor *ibox = lmoco_newbox(L);
    lmoco_settensor(L, ibox, tensor_empty(4, os.d));
    float *fidx = ibox->t->data;
    /* The C kernel writes int32 into the new tensor's storage; convert each slot in place
     * (same size, read before write), so Lua sees exact float values like PyTorch's indices. */
    maxpool2d_forward(out->data, (int32_t *)(void *)fidx, inp->data, &ms);
    for (int64_t i = 0; i < ibox->t->numel; i++) {
        int32_t v;
        memcpy(&v, fidx + i, sizeof v);
        fidx[i] = (float)v;
    }
    return 2;
}

static int l_maxpool2d_backward_input(lua_State *L) {
    const char *fn = "maxpool2d_backward_input";
    Tensor *dout = lmoco_checktensor(L, 1), *indices = lmoco_checktensor(L, 2);
    Shape in = check_shape_arg(L, 3, fn, "input_shape");
    int k = check_size_arg(L, 4, fn, "kernel", 0);
    int st = check_size_arg(L, 5, fn, "stride", k), pad = check_size_arg(L, 6, fn, "padding", 0);
    MaxPool2dSize ms;
    maxpool_setup(L, fn, &in, k, st, pad, &ms);
    Shape os = {4, {ms.N, ms.C, ms.OH, ms.OW}};
    check_shape(L, fn, "grad_out", dout, &os, "(the output shape for this input shape)");
    check_shape(L, fn, "indices", indices, &os, "(the output shape for this input shape)");
    Tensor *dinp = push_out(L, 7, fn, "grad_input", &in);
    check_no_overlap(L, fn, "grad_input", dinp, "grad_out", dout, 0);
    check_no_overlap(L, fn, "grad_input", dinp, "indices", indices, 0);
    /* Validate every index: the scatter writes where they point. */
    int32_t *idx = scratch(L, (size_t)indices->numel * sizeof *idx);
    const float plane = (float)ms.H * ms.W;
    for (int64_t i = 0; i < indices->numel; i++) {
        float v = indices->data[i];
        if (!(v >= 0 && v < plane) || v != floorf(v))
            return luaL_error(L, "%s: indices entry %I is %f, not a position in a %dx%d plane (0-based)", fn,
                              (lua_Integer)i + 1, (double)v, ms.H, ms.W);
        idx[i] = (int32_t)v;
    }
    maxpool2d_backward_input(dinp->data, dout->data, idx, &ms);
    return 1;
}

static int l_avgpool_global_forward(lua_State *L) {
    const char *fn = "avgpool_global_forward";
    Tensor *inp = lmoco_checktensor(L, 1);
    check_ndim(L, fn, "input", inp, 4, "(N, C, H, W)");
    int N = as_int(L, fn, inp->shape[0]), C = as_int(L, fn, inp->shape[1]);
    int HW = as_int(L, fn, inp->shape[2] * inp->shape[3]);
    if (HW < 1) luaL_error(L, "%s: input %s has empty planes", fn, tshape(L, inp));
    Shape os = {2, {N, C}};
    Tensor *out = push_out(L, 2, fn, "out", &os);
    check_no_overlap(L, fn, "out", out, "input", inp, 0);
    avgpool_global_forward(out->data, inp->data, N, C, HW);
    return 1;
}

static int l_avgpool_global_backward_input(lua_State *L) {
    const char *fn = "avgpool_global_backward_input";
    Tensor *dout = lmoco_checktensor(L, 1);
    Shape in = check_shape_arg(L, 2, fn, "input_shape");
    if (in.ndim != 4) luaL_error(L, "%s: input_shape should be 4-d (N, C, H, W), got %s", fn, shape_text(L, in.ndim, in.d));
    Shape os = {2, {in.d[0], in.d[1]}};
    check_shape(L, fn, "grad_out", dout, &os, "(N, C of the input shape)");
    int HW = as_int(L, fn, in.d[2] * in.d[3]);
    if (HW < 1) luaL_error(L, "%s: input_shape %s has empty planes", fn, shape_text(L, in.ndim, in.d));
    Tensor *dinp = push_out(L, 3, fn, "grad_input", &in);
    check_no_overlap(L, fn, "grad_input", dinp, "grad_out", dout, 0);
    avgpool_global_backward_input(dinp->data, dout->data, as_int(L, fn, in.d[0]), as_int(L, fn, in.d[1]), HW);
    return 1;
}

/* ------------------------------------------------------------ linear */

static void linear_check(lua_State *L, const char *fn, const char *inname, const Tensor *inp,
                         const char *wname, const Tensor *weight) {
    check_ndim(L, fn, inname, inp, 2, "(N, in_features)");
    check_ndim(L, fn, wname, weight, 2, "(out_features, in_features)");
    if (weight->shape[1] != inp->shape[1])
        luaL_error(L, "%s: %s %s has %I input features but %s %s has %I", fn, wname, tshape(L, weight),
                   (lua_Integer)weight->shape[1], inname, tshape(L, inp), (lua_Integer)inp->shape[1]);
    as_int(L, fn, inp->shape[0]);
    as_int(L, fn, weight->shape[0]);
    as_int(L, fn, weight->shape[1]);
}

static int l_linear_forward(lua_State *L) {
    const char *fn = "linear_forward";
    Tensor *inp = lmoco_checktensor(L, 1), *weight = lmoco_checktensor(L, 2), *bias = opt_tensor(L, 3);
    linear_check(L, fn, "input", inp, "weight", weight);
    check_bias(L, fn, "bias", bias, weight->shape[0], "output feature", "weight", weight);
    Shape os = {2, {inp->shape[0], weight->shape[0]}};
    Tensor *out = push_out(L, 4, fn, "out", &os);
    check_no_overlap(L, fn, "out", out, "input", inp, 0);
    check_no_overlap(L, fn, "out", out, "weight", weight, 0);
    check_no_overlap(L, fn, "out", out, "bias", bias, 0);
    linear_forward(out->data, inp->data, weight->data, bias ? bias->data : NULL, (int)inp->shape[0],
                   (int)weight->shape[1], (int)weight->shape[0]);
    return 1;
}

static int l_linear_backward_input(lua_State *L) {
    const char *fn = "linear_backward_input";
    Tensor *dout = lmoco_checktensor(L, 1), *weight = lmoco_checktensor(L, 2);
    check_ndim(L, fn, "grad_out", dout, 2, "(N, out_features)");
    check_ndim(L, fn, "weight", weight, 2, "(out_features, in_features)");
    if (dout->shape[1] != weight->shape[0])
        luaL_error(L, "%s: weight %s has %I output features but grad_out %s has %I", fn, tshape(L, weight),
                   (lua_Integer)weight->shape[0], tshape(L, dout), (lua_Integer)dout->shape[1]);
    Shape is = {2, {dout->shape[0], weight->shape[1]}};
    Tensor *dinp = push_out(L, 3, fn, "grad_input", &is);
    check_no_overlap(L, fn, "grad_input", dinp, "grad_out", dout, 0);
    check_no_overlap(L, fn, "grad_input", dinp, "weight", weight, 0);
    linear_backward_input(dinp->data, dout->data, weight->data, as_int(L, fn, dout->shape[0]),
                          as_int(L, fn, weight->shape[1]), as_int(L, fn, weight->shape[0]));
    return 1;
}

static int l_linear_backward_params(lua_State *L) {
    const char *fn = "linear_backward_params";
    Tensor *dout = lmoco_checktensor(L, 1), *inp = lmoco_checktensor(L, 2);
    Tensor *dweight = lmoco_checktensor(L, 3), *dbias = opt_tensor(L, 4);
    linear_check(L, fn, "input", inp, "grad_weight", dweight);
    check_bias(L, fn, "grad_bias", dbias, dweight->shape[0], "output feature", "grad_weight", dweight);
    Shape os = {2, {inp->shape[0], dweight->shape[0]}};
    check_shape(L, fn, "grad_out", dout, &os, "(N of input, out_features of grad_weight)");
    check_no_overlap(L, fn, "grad_weight", dweight, "grad_out", dout, 0);
    check_no_overlap(L, fn, "grad_weight", dweight, "input", inp, 0);
    check_no_overlap(L, fn, "grad_bias", dbias, "grad_out", dout, 0);
    linear_backward_params(dweight->data, dbias ? dbias->data : NULL, dout->data, inp->data,
                           (int)inp->shape[0], (int)dweight->shape[1], (int)dweight->shape[0]);
    return 0;
}

/* ------------------------------------------------------------ normalize, cross-entropy */

static int l_normalize_forward(lua_State *L) {
    const char *fn = "normalize_forward";
    Tensor *inp = lmoco_checktensor(L, 1);
    float eps = (float)luaL_optnumber(L, 2, 1e-12);
    check_ndim(L, fn, "input", inp, 2, "(N, D)");
    if (!(eps > 0)) luaL_error(L, "%s: eps must be positive, got %f", fn, (double)eps);
    int N = as_int(L, fn, inp->shape[0]), D = as_int(L, fn, inp->shape[1]);
    Shape is = {2, {N, D}}, ns = {1, {N}};
    Tensor *out = push_out(L, 3, fn, "out", &is);
    check_no_overlap(L, fn, "out", out, "input", inp, 1);
    LTensor *nbox = lmoco_newbox(L);
    lmoco_settensor(L, nbox, tensor_empty(1, ns.d));
    normalize_forward(out->data, nbox->t->data, inp->data, N, D, eps);
    return 2;
}

static int l_normalize_backward_input(lua_State *L) {
    const char *fn = "normalize_backward_input";
    Tensor *dout = lmoco_checktensor(L, 1), *out = lmoco_checktensor(L, 2), *norms = lmoco_checktensor(L, 3);
    float eps = (float)luaL_optnumber(L, 4, 1e-12);
    check_ndim(L, fn, "output", out, 2, "(N, D)");
    if (!tensor_same_shape(dout, out))
        luaL_error(L, "%s: grad_out %s should have the shape of output %s", fn, tshape(L, dout), tshape(L, out));
    Shape ns = {1, {out->shape[0]}}, is = {2, {out->shape[0], out->shape[1]}};
    check_shape(L, fn, "norms", norms, &ns, "(one per row of output)");
    Tensor *dinp = push_out(L, 5, fn, "grad_input", &is);
    check_no_overlap(L, fn, "grad_input", dinp, "grad_out", dout, 1);
    check_no_overlap(L, fn, "grad_input", dinp, "output", out, 0);
    check_no_overlap(L, fn, "grad_input", dinp, "norms", norms, 0);
    normalize_backward_input(dinp->data, dout->data, out->data, norms->data, as_int(L, fn, out->shape[0]),
                             as_int(L, fn, out->shape[1]), eps);
    return 1;
}

static int l_cross_entropy(lua_State *L) {
    const char *fn = "cross_entropy";
    Tensor *logits = lmoco_checktensor(L, 1), *labels = lmoco_checktensor(L, 2);
    int want_grad = !(lua_isboolean(L, 3) && !lua_toboolean(L, 3));
    check_ndim(L, fn, "logits", logits, 2, "(N, classes)");
    int N = as_int(L, fn, logits->shape[0]), K = as_int(L, fn, logits->shape[1]);
    if (N < 1 || K < 1) luaL_error(L, "%s: logits %s is empty", fn, tshape(L, logits));
    Shape ls = {1, {N}};
    check_shape(L, fn, "labels", labels, &ls, "(one class number per row of logits)");
    Tensor *grad = NULL;
    if (want_grad) {
        Shape gs = {2, {N, K}};
        grad = push_out(L, lua_isboolean(L, 3) ? 0 : 3, fn, "grad_logits", &gs); /* true: a new one */
        check_no_overlap(L, fn, "grad_logits", grad, "logits", logits, 1);
        check_no_overlap(L, fn, "grad_logits", grad, "labels", labels, 0);
    }
    int64_t *lab = scratch(L, (size_t)N * sizeof *lab);
    lmoco_checklabels(L, fn, labels, lab);
    float loss;
    if (cross_entropy_forward_backward(&loss, grad ? grad->data : NULL, logits->data, lab, N, K))
        return lmoco_error(L);
    lua_pushnumber(L, loss);
    if (grad)
        lua_rotate(L, -2, 1); /* loss, grad */
    else
        lua_pushnil(L);
    return 2;
}

/* ------------------------------------------------------------ threads */

static int l_set_winograd(lua_State *L) {
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    lua_pushboolean(L, conv2d_set_winograd(lua_toboolean(L, 1)));
    return 1;
}

static int l_gemm_backend(lua_State *L) {
    lua_pushstring(L, moco_gemm_backend());
    return 1;
}

static int l_winograd_status(lua_State *L) {
    const char *why;
    lua_pushboolean(L, conv2d_winograd_status(&why));
    lua_pushstring(L, why);
    return 2;
}

/* ------------------------------------------------------------ registration */

static const luaL_Reg nn_functions[] = {
    {"conv2d_forward", l_conv2d_forward},
    {"conv2d_backward_input", l_conv2d_backward_input},
    {"conv2d_backward_params", l_conv2d_backward_params},
    {"batchnorm_forward", l_batchnorm_forward},
    {"batchnorm_backward_input", l_batchnorm_backward_input},
    {"batchnorm_backward_params", l_batchnorm_backward_params},
    {"batchnorm_backward", l_batchnorm_backward},
    {"relu_forward", l_relu_forward},
    {"batchnorm_forward_saved", l_batchnorm_forward_saved},
    {"add_relu_forward", l_add_relu_forward},
    {"add_into", l_add_into},
    {"relu_backward_input", l_relu_backward_input},
    {"maxpool2d_forward", l_maxpool2d_forward},
    {"maxpool2d_backward_input", l_maxpool2d_backward_input},
    {"avgpool_global_forward", l_avgpool_global_forward},
    {"avgpool_global_backward_input", l_avgpool_global_backward_input},
    {"linear_forward", l_linear_forward},
    {"linear_backward_input", l_linear_backward_input},
    {"linear_backward_params", l_linear_backward_params},
    {"normalize_forward", l_normalize_forward},
    {"normalize_backward_input", l_normalize_backward_input},
    {"cross_entropy", l_cross_entropy},
    {"workspace_bytes", l_workspace_bytes},
    {"free_workspace", l_free_workspace},
    {"set_winograd", l_set_winograd},
    {"winograd_status", l_winograd_status},
    {"gemm_backend", l_gemm_backend},
    {NULL, NULL}};

void lmoco_open_nn(lua_State *L) {
    luaL_newlib(L, nn_functions);
    lua_setfield(L, -2, "_nn");
}
