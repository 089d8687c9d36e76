/* core/nn/conv3x3.c: 3x3 convolutions (stride 1, and stride 2 except the input gradient)
 * computed directly with vectors of output channels, instead of im2col + sgemm.
 *
 * Why: for the small channel counts of a CIFAR/MNIST ResNet (16-64), im2col writes nine
 * copies of every input, OpenBLAS copies them again into its panels, and the products are
 * too small for those copies to pay off; about half the time went to copying.  Here each
 * image is read from a zero-padded copy of itself, and a tile of output positions x output
 * channels is accumulated in registers (oneDNN's "direct" method, written with GCC vector
 * extensions instead of a JIT).  On Zen 4 that is 85-105 GFLOP/s per core against 45-82.
 *
 * The padded grid.  An image (Cin, H, W) is copied into xin (Cin, Hp, Wp) with a zero
 * border, Hp = H + 2*pad rows of Wp = W + pad: the pad zero columns after a row also serve
 * as the left border of the next row (the left border of the first row is the float or two
 * of slack in front).  Output (oh, ow) is given the flattened position q = oh*Wp + ow on a
 * grid as wide as the input's, so that tap (kh, kw) reads xin[c][q + kh*Wp + kw - pad] for
 * every q: a tile of consecutive q's reads consecutive inputs, across row ends.  The grid's
 * last Wp - OW = 2 - pad columns of each row are junk (their taps wrap into the next row);
 * they are computed and dropped, which costs 3% of the arithmetic on 28x28 and 12% on 7x7.
 * Stride 2 splits each padded channel into its four (row, column) parity phases, after
 * which every tap is again a stride-1 read (see stride2_layout).
 *
 * Layouts (per image, in the calling thread's workspace slice):
 *     xin  slack + (Cin, plane) + slack   the padded image (or its phases)
 *     yt   (q, OCP)                       a tile's outputs are OCP-long rows, OCP = OC
 *                                         rounded up to the vector width (zero weights
 *                                         beyond OC)
 * and yt is transposed into NCHW at the end, 16 x 16 blocks at a time.  Weights are
 * rearranged once per call, before the tasks start, into wt (C*9, OCP): row c*9 + kh*3 + kw
 * holds every output channel's weight for that input channel and tap.
 *
 * The three passes are all this one pattern:
 *   forward          xin = input padded by P, weights wt, outputs = out (OC channels);
 *   backward_input   the adjoint of a stride-1 conv is a stride-1 conv of dout padded by
 *                    2 - P with the weights flipped (kh -> 2-kh, kw -> 2-kw) and their
 *                    channel roles swapped, giving dinp (C channels);
 *   backward_params  dw (C*9, OCP) += sum over q of dout_t[q] (OCP) * xin[c][q + tap],
 *                    dout_t being dout in (q, OCP) layout with zeros on the junk columns, so
 *                    the sum may run over every q.  Each task keeps its own dw for its
 *                    slice of the batch; they are added in task order at the end.
 * Threads: forward and backward_input hand out one image per task (the calling thread's
 * slice of the workspace holds xin and yt); backward_params splits the batch into
 * s->threads slices.
 *
 * Register tiles (AVX-512: 32 vector registers of 16 floats): positions x vectors of output
 * channels = 28 x 1, 14 x 2 or 6 x 4, leaving room for the weights and one broadcast.
 * Without AVX-512 the vectors have 8 floats and the tiles are 12 x 1 and 6 x 2 (16 AVX
 * registers).  The accumulators are named variables (macros below): GCC keeps an array of
 * vectors in memory, which halves the speed. */
#include <stdint.h>
#include <string.h>

#include "nn/conv3x3.h"
#include "threads.h"

#if defined(__AVX512F__)
#define CV 16     /* floats per vector */
#define OCV_MAX 4 /* vectors of output channels per tile */
#else
#define CV 8
#define OCV_MAX 2
#endif

typedef float cvec __attribute__((vector_size(CV * sizeof(float))));

/* (see nn/vec.h: these static helpers have no ABI to change) */
#pragma GCC diagnostic ignored "-Wpsabi"

static inline cvec cv_load(const float *p) {
    cvec v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static inline void cv_store(float *p, cvec v) { __builtin_memcpy(p, &v, sizeof v); }

/* Transposes a CV x CV block held in r[0..CV-1] (row i = r[i]) in place: log2(CV) rounds,
 * round h swapping the off-diagonal h x h blocks of each pair of rows (i, i+h), one
 * two-input shuffle per row (vpermt2ps with AVX-512).  About 0.3 cycles per element
 * against 2-3 for scalar strided copies. */
typedef int32_t cvec_index __attribute__((vector_size(CV * sizeof(int32_t))));
#if CV == 16
#define LO8 {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}
#define HI8 {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}
#define LO4 {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27}
#define HI4 {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}
#define LO2 {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29}
#define HI2 {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}
#define LO1 {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}
#define HI1 {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}
#else
#define LO4 {0, 1, 2, 3, 8, 9, 10, 11}
#define HI4 {4, 5, 6, 7, 12, 13, 14, 15}
#define LO2 {0, 1, 8, 9, 4, 5, 12, 13}
#define HI2 {2, 3, 10, 11, 6, 7, 14, 15}
#define LO1 {0, 8, 2, 10, 4, 12, 6, 14}
#define HI1 {1, 9, 3, 11, 5, 13, 7, 15}
#endif

static inline __attribute__((always_inline)) void transpose_round(cvec *r, int h, cvec_index lo, cvec_index hi) {
#pragma GCC unroll 16
    for (int i = 0; i < CV; i++)
        if (!(i & h)) {
            cvec a = r[i], b = r[i + h];
            r[i] = __builtin_shuffle(a, b, lo);
            r[i + h] = __builtin_shuffle(a, b, hi);
        }
}

static inline __attribute__((always_inline)) void transpose_block(cvec *r) {
#if CV == 16
    transpose_round(r, 8, (cvec_index)LO8, (cvec_index)HI8);
#endif
    transpose_round(r, 4, (cvec_index)LO4, (cvec_index)HI4);
    transpose_round(r, 2, (cvec_index)LO2, (cvec_index)HI2);
    transpose_round(r, 1, (cvec_index)LO1, (cvec_index)HI1);
}

/* Slack before xin's first plane (the left border of its first row, pad <= 2 floats), and
 * after its last one: a tile of PB positions starting at the last valid q reads up to
 * PB + 2 floats beyond the last plane. */
#define XIN_FRONT 2
#define XIN_SLACK 64

/* ------------------------------------------------------------ forward tiles
 * y (PB rows at stride ldy) = sum of x[c*plane + kh*Wp + kw + i] * w[(c*9 + kh*3 + kw)*ldw]
 * over the 9 taps and c < C, for OCV vectors of channels; with `add` that sum is added to
 * y.  The caller goes through the input channels in blocks of IN_BLOCK = 16.
 *
 * The order of the sums is oneDNN's (PyTorch's CPU convolution, its jit:avx512_core direct
 * kernel): a block's sum starts from zero and runs tap by tap, each tap over the block's
 * channels, one fused multiply-add per step; then the block sums are added to the output
 * in block order.  With the same order the forward rounds exactly as PyTorch does (checked
 * against PyTorch 1.13 on 64-channel layers: all of 1000 sampled outputs bit-identical).
 * Why it matters: a ResNet has values within 1e-6 of a ReLU's kink, and another rounding
 * order moves some of them to the other side; the reference tests against PyTorch compare
 * whole gradients, which one such value changes by 1e-2.  (A single running sum over all
 * channels, the first version, also had twice the rounding error.) */
#define IN_BLOCK 16

static inline void store_or_add(float *p, cvec v, int add) { cv_store(p, add ? cv_load(p) + v : v); }

#define P2(M) M(0) M(1)
#define P6(M) M(0) M(1) M(2) M(3) M(4) M(5)
#define P12(M) P6(M) M(6) M(7) M(8) M(9) M(10) M(11)
#define P14(M) P12(M) M(12) M(13)
#define P28(M) P14(M) M(14) M(15) M(16) M(17) M(18) M(19) M(20) M(21) M(22) M(23) M(24) M(25) M(26) M(27)

#define DECL1(i) cvec a##i = {0};
#define FMA1(i) a##i += xp[i] * w0;
#define STORE1(i) store_or_add(y + (i) * ldy, a##i, add);

#define DECL2(i) cvec a##i##_0 = {0}, a##i##_1 = {0};
#define FMA2(i) { const float xs = xp[i]; a##i##_0 += xs * w0; a##i##_1 += xs * w1; }
#define STORE2(i) store_or_add(y + (i) * ldy, a##i##_0, add); store_or_add(y + (i) * ldy + CV, a##i##_1, add);

#define DECL4(i) cvec a##i##_0 = {0}, a##i##_1 = {0}, a##i##_2 = {0}, a##i##_3 = {0};
#define FMA4(i) { const float xs = xp[i]; a##i##_0 += xs * w0; a##i##_1 += xs * w1; \
                  a##i##_2 += xs * w2; a##i##_3 += xs * w3; }
#define STORE4(i) store_or_add(y + (i) * ldy, a##i##_0, add); store_or_add(y + (i) * ldy + CV, a##i##_1, add); \
                  store_or_add(y + (i) * ldy + 2 * CV, a##i##_2, add); store_or_add(y + (i) * ldy + 3 * CV, a##i##_3, add);

#define LOADW1 const cvec w0 = cv_load(w);
#define LOADW2 const cvec w0 = cv_load(w), w1 = cv_load(w + CV);
#define LOADW4 const cvec w0 = cv_load(w), w1 = cv_load(w + CV), w2 = cv_load(w + 2 * CV), w3 = cv_load(w + 3 * CV);

/* GCC notices that tap kw+1 reads what tap kw read one position later and tries to carry
 * the loaded values from one iteration to the next: with 28 of them that spills to the
 * stack and halves the speed.  An empty asm that "changes" the pointer stops it: the loads
 * are then plain broadcasts from L1, which the FMAs take as memory operands. */
#if defined(__GNUC__)
#define HIDE_POINTER(p) __asm__("" : "+r"(p))
#else
#define HIDE_POINTER(p) ((void)0)
#endif

#define DEFINE_PRODUCT_TILE(name, PLIST, DECL, LOADW, FMA, STORE)                                    \
    static void name(float *y, size_t ldy, const float *x, size_t plane, const int *tap, int C,         \
                     const float *w_first, size_t ldw, int add) {                                    \
        PLIST(DECL)                                                                                  \
        for (int kh = 0; kh < 3; kh++)                                                               \
            for (int kw = 0; kw < 3; kw++) {                                                         \
                const float *xk = x + tap[kh * 3 + kw], *wk = w_first + (kh * 3 + kw) * ldw;         \
                for (int c = 0; c < C; c++) {                                                        \
                    const float *xp = xk + c * plane, *w = wk + c * 9 * ldw;                         \
                    HIDE_POINTER(xp);                                                                \
                    LOADW                                                                            \
                    PLIST(FMA)                                                                       \
                }                                                                                    \
            }                                                                                        \
        PLIST(STORE)                                                                                 \
    }

#if CV == 16
#define PB1 28
#define PB2 14
#define PB4 6
DEFINE_PRODUCT_TILE(product_tile1, P28, DECL1, LOADW1, FMA1, STORE1)
DEFINE_PRODUCT_TILE(product_tile2, P14, DECL2, LOADW2, FMA2, STORE2)
DEFINE_PRODUCT_TILE(product_tile4, P6, DECL4, LOADW4, FMA4, STORE4)
#else
#define PB1 12
#define PB2 6
DEFINE_PRODUCT_TILE(product_tile1, P12, DECL1, LOADW1, FMA1, STORE1)
DEFINE_PRODUCT_TILE(product_tile2, P6, DECL2, LOADW2, FMA2, STORE2)
#endif

#if CV == 16
/* The positions tile: vectors along the output grid instead of the output channels.  8
 * output channels x 48 grid positions (3 vectors) = 24 accumulators; per (tap, channel) 3
 * input loads and 8 weight broadcasts feed 24 FMAs, where the 28 x 1 tile above broadcasts
 * one input per FMA (and is bound by loads: 45% of the peak on 16-channel layers).  Each
 * output sums in the same order (tap by tap, each over the block's channels, from zero),
 * so the results are bit-identical.  y is (channels, positions) with row stride ldq. */
#define POS_OC 8
#define POS_Q 48
#define PDECL(o) cvec p##o##_0 = {0}, p##o##_1 = {0}, p##o##_2 = {0};
#define PFMA(o) { const float ws = w[o]; p##o##_0 += x0 * ws; p##o##_1 += x1 * ws; p##o##_2 += x2 * ws; }
#define PSTORE(o) { float *yo = y + (size_t)(o) * ldq; store_or_add(yo, p##o##_0, add); \
                    store_or_add(yo + CV, p##o##_1, add); store_or_add(yo + 2 * CV, p##o##_2, add); }
#define P8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)
static void product_tile_pos(float *y, size_t ldq, const float *x, size_t plane, const int *tap, int C,
                             const float *w_first, size_t ldw, int add) {
    P8(PDECL)
    for (int kh = 0; kh < 3; kh++)
        for (int kw = 0; kw < 3; kw++) {
            const float *xk = x + tap[kh * 3 + kw], *wk = w_first + (kh * 3 + kw) * ldw;
            for (int c = 0; c < C; c++) {
                const float *xp = xk + c * plane, *w = wk + c * 9 * ldw;
                const cvec x0 = cv_load(xp), x1 = cv_load(xp + CV), x2 = cv_load(xp + 2 * CV);
                P8(PFMA)
            }
        }
    P8(PSTORE)
}
#endif

/* ------------------------------------------------------------ backward_params tiles
 * For CB input channels from x and OCV vectors of output channels from g: dw rows
 * (c*9 + kh*3 + kw) += sum over q < Q of x[c*plane + tap[kh*3 + kw] + q] * g[q*ldg ...]. */

/* the tap offsets as named constants t00 .. t22 */
#define TAP_CONSTANTS(tap) const int t00 = tap[0], t01 = tap[1], t02 = tap[2], t10 = tap[3], t11 = tap[4], \
                                     t12 = tap[5], t20 = tap[6], t21 = tap[7], t22 = tap[8];

#define TAPS(M, c) M(c, 0, 0) M(c, 0, 1) M(c, 0, 2) M(c, 1, 0) M(c, 1, 1) M(c, 1, 2) M(c, 2, 0) M(c, 2, 1) M(c, 2, 2)

#define GDECL1(c, kh, kw) cvec a##c##kh##kw = {0};
#define GFMA1(c, kh, kw) a##c##kh##kw += xq##c[t##kh##kw] * g0;
#define GSTORE1(c, kh, kw) { float *d = dw + ((size_t)(c) * 9 + (kh) * 3 + (kw)) * ldw; \
                             cv_store(d, cv_load(d) + a##c##kh##kw); }
#define GDECL2(c, kh, kw) cvec a##c##kh##kw##_0 = {0}, a##c##kh##kw##_1 = {0};
#define GFMA2(c, kh, kw) { const float xs = xq##c[t##kh##kw]; a##c##kh##kw##_0 += xs * g0; \
                           a##c##kh##kw##_1 += xs * g1; }
#define GSTORE2(c, kh, kw) { float *d = dw + ((size_t)(c) * 9 + (kh) * 3 + (kw)) * ldw; \
                             cv_store(d, cv_load(d) + a##c##kh##kw##_0); \
                             cv_store(d + CV, cv_load(d + CV) + a##c##kh##kw##_1); }

static void grad_tile1x1(float *dw, size_t ldw, const float *x, size_t plane, const int *tap, const float *g,
                         size_t ldg, int Q) {
    (void)plane;
    TAP_CONSTANTS(tap)
    const float *x0 = x;
    TAPS(GDECL1, 0)
    for (int q = 0; q < Q; q++) {
        const cvec g0 = cv_load(g + (size_t)q * ldg);
        const float *xq0 = x0 + q;
        HIDE_POINTER(xq0);
        TAPS(GFMA1, 0)
    }
    TAPS(GSTORE1, 0)
}

#if CV == 16
#define GRAD_CB1 3 /* input channels per one-vector tile */
static void grad_tile3x1(float *dw, size_t ldw, const float *x, size_t plane, const int *tap, const float *g,
                         size_t ldg, int Q) {
    TAP_CONSTANTS(tap)
    const float *x0 = x, *x1 = x + plane, *x2 = x + 2 * plane;
    TAPS(GDECL1, 0) TAPS(GDECL1, 1) TAPS(GDECL1, 2)
    for (int q = 0; q < Q; q++) {
        const cvec g0 = cv_load(g + (size_t)q * ldg);
        const float *xq0 = x0 + q, *xq1 = x1 + q, *xq2 = x2 + q;
        HIDE_POINTER(xq0);
        HIDE_POINTER(xq1);
        HIDE_POINTER(xq2);
        TAPS(GFMA1, 0) TAPS(GFMA1, 1) TAPS(GFMA1, 2)
    }
    TAPS(GSTORE1, 0) TAPS(GSTORE1, 1) TAPS(GSTORE1, 2)
}

static void grad_tile1x2(float *dw, size_t ldw, const float *x, size_t plane, const int *tap, const float *g,
                         size_t ldg, int Q) {
    (void)plane;
    TAP_CONSTANTS(tap)
    const float *x0 = x;
    TAPS(GDECL2, 0)
    for (int q = 0; q < Q; q++) {
        const cvec g0 = cv_load(g + (size_t)q * ldg), g1 = cv_load(g + (size_t)q * ldg + CV);
        const float *xq0 = x0 + q;
        HIDE_POINTER(xq0);
        TAPS(GFMA2, 0)
    }
    TAPS(GSTORE2, 0)
}
#else
#define GRAD_CB1 1
#endif

/* ------------------------------------------------------------ geometry */

/* One product pass: Cin input channels of Hin x Win padded by pad, Cout outputs of
 * Hout x Wout.  xin holds `plane` floats per input channel; tap[kh*3 + kw] is where tap
 * (kh, kw) of grid position q reads, relative to q in the channel's part of xin (see
 * grid_origin); the output grid is Hout rows of Wp positions. */
typedef struct Pass {
    int Cin, Hin, Win, pad, stride, Hp, Wp;
    int Cout, Coutp, Hout, Wout, Q; /* Q = Hout * Wp */
    size_t plane;
    int tap[9];
} Pass;

/* Stride 1: the padded grid described at the top. */
static void stride1_layout(Pass *p) {
    p->Hp = p->Hin + 2 * p->pad, p->Wp = p->Win + p->pad;
    p->plane = (size_t)p->Hp * p->Wp;
    for (int t = 0; t < 9; t++) p->tap[t] = t / 3 * p->Wp + t % 3;
}

/* Stride 2: xin holds, per channel, the four phases of the padded input, phase (a, b)
 * (a, b in {0, 1}) holding padded rows a, a+2, ... and columns b, b+2, ..., as Hp x Wp
 * planes with Hp = Hout + 1 and Wp = Wout + 1.  Tap (kh, kw) of output (oh, ow) reads padded
 * input (2*oh + kh, 2*ow + kw), that is position (oh + kh/2, ow + kw/2) of phase
 * (kh%2, kw%2): a stride-1 read again, so the tiles need nothing else.  One junk column. */
static void stride2_layout(Pass *p) {
    p->Hp = p->Hout + 1, p->Wp = p->Wout + 1;
    const int phase = p->Hp * p->Wp;
    p->plane = (size_t)4 * phase;
    for (int kh = 0; kh < 3; kh++)
        for (int kw = 0; kw < 3; kw++) p->tap[kh * 3 + kw] = ((kh % 2) * 2 + kw % 2) * phase + kh / 2 * p->Wp + kw / 2;
}

static int round_up(int n, int m) { return (n + m - 1) / m * m; }

static Pass forward_pass(const Conv2dSize *s) {
    Pass p = {.Cin = s->C, .Hin = s->H, .Win = s->W, .pad = s->padding, .stride = s->stride, .Cout = s->OC,
              .Hout = s->OH, .Wout = s->OW};
    if (p.stride == 2)
        stride2_layout(&p);
    else
        stride1_layout(&p);
    p.Coutp = round_up(p.Cout, CV), p.Q = p.Hout * p.Wp;
    return p;
}

/* Stride 1 only. */
static Pass backward_input_pass(const Conv2dSize *s) {
    Pass p = {.Cin = s->OC, .Hin = s->OH, .Win = s->OW, .pad = 2 - s->padding, .stride = 1, .Cout = s->C,
              .Hout = s->H, .Wout = s->W};
    stride1_layout(&p);
    p.Coutp = round_up(p.Cout, CV), p.Q = p.Hout * p.Wp;
    return p;
}

static size_t xin_floats(const Pass *p) { return XIN_FRONT + (size_t)p->Cin * p->plane + XIN_SLACK; }

/* Where grid position 0 of channel 0 reads its taps from (tap offsets are relative to it):
 * for stride 1 the left border of the first row is the slack in front. */
static const float *grid_origin(const float *xin, const Pass *p) {
    return xin + XIN_FRONT - (p->stride == 1 ? p->pad : 0);
}

/* The per-thread output grid: (Q + PB1, Coutp) rows for the channel tiles, or (Coutp,
 * Q + POS_Q) for the positions tile. */
static size_t yt_floats(const Pass *p) {
#if CV == 16
    if ((size_t)(p->Q + POS_Q) * p->Coutp > (size_t)(p->Q + PB1) * p->Coutp) return (size_t)(p->Q + POS_Q) * p->Coutp;
#endif
    return (size_t)(p->Q + PB1) * p->Coutp;
}

#if CV == 16
/* Whether a pass runs on the positions tile: few output channels (the channel tiles hold
 * one vector of them and broadcast an input per FMA).  AVX-512 builds only. */
static int use_positions(const Pass *p) { return p->Coutp <= CV; }
#endif

int conv3x3_applies(const Conv2dSize *s) {
    return s->KH == 3 && s->KW == 3 && (s->stride == 1 || s->stride == 2) && s->padding <= 2;
}

int conv3x3_applies_backward_input(const Conv2dSize *s) { return conv3x3_applies(s) && s->stride == 1; }

/* Measured on Zen 4 against im2col + OpenBLAS, single thread, GFLOP/s of forward,
 * backward_input, backward_params: 16-64 channels at 7x7 to 32x32, 83-105 against 48-82;
 * 128 channels at 16x16, 101 against 89; 256 channels at 8x8, 95/95/87 against 86/86/91
 * (about even: backward_params keeps a 2.4 MB gradient per task, which leaves the cache);
 * 512 channels at 4x4, 42/47/34 against 86/78/88 (few positions per image for many
 * weights, a fifth of them junk); and an input of 1-3 channels leaves each tile too little
 * work (15 against 60). */
int conv3x3_preferred(const Conv2dSize *s) {
    return conv3x3_applies(s) && s->C >= 8 && s->OC >= 16 && s->C * s->OC <= 128 * 128 &&
           (s->OW >= 8 || s->C * s->OC <= 64 * 64);
}

static int thread_count(const Conv2dSize *s) { return s->threads < 1 ? 1 : s->threads; }

/* Workspace: shared weights, then per thread xin and yt, then per task dw. */
static size_t weight_floats(const Conv2dSize *s) {
    size_t f = (size_t)s->C * 9 * round_up(s->OC, CV), b = (size_t)s->OC * 9 * round_up(s->C, CV);
    return f > b ? f : b;
}

/* Shared by the tasks of a call: the rearranged weights, then the grid row of every output
 * position (int32, as many floats). */
static size_t shared_floats(const Conv2dSize *s) {
    size_t f = (size_t)s->OH * s->OW, b = (size_t)s->H * s->W;
    return weight_floats(s) + (f > b ? f : b);
}

static size_t thread_floats(const Conv2dSize *s) {
    Pass f = forward_pass(s), b = s->stride == 1 ? backward_input_pass(s) : f;
    size_t x = xin_floats(&f) > xin_floats(&b) ? xin_floats(&f) : xin_floats(&b);
    size_t y = yt_floats(&f) > yt_floats(&b) ? yt_floats(&f) : yt_floats(&b);
    return x + y;
}

static size_t task_floats(const Conv2dSize *s) { return (size_t)s->C * 9 * round_up(s->OC, CV); }

size_t conv3x3_workspace_size(const Conv2dSize *s) {
    size_t T = (size_t)thread_count(s);
    return shared_floats(s) + T * thread_floats(s) + T * task_floats(s);
}

/* Stride 2: xin  <-  the four phases of each padded channel (see stride2_layout): zero
 * everything, then scatter each input row into the two phases its parity selects. */
static void split_phases(float *xin, const float *img, const Pass *p) {
    const int W = p->Win, H = p->Hin, Wp = p->Wp, pad = p->pad;
    const size_t phase = (size_t)p->Hp * Wp;
    memset(xin, 0, xin_floats(p) * sizeof *xin);
    for (int c = 0; c < p->Cin; c++) {
        float *x = xin + XIN_FRONT + (size_t)c * p->plane;
        for (int r = 0; r < H; r++) {
            const int a = (r + pad) % 2, i = (r + pad) / 2;
            if (i >= p->Hp) break;
            const float *src = img + ((size_t)c * H + r) * W;
            for (int b = 0; b < 2; b++) {
                float *d = x + (size_t)(a * 2 + b) * phase + (size_t)i * Wp;
                /* d[j] = src[2j + b - pad] for the j whose column is inside the row */
                int j0 = (pad - b + 1) / 2, j1 = (W - 1 + pad - b) / 2 + 1;
                if (j0 < 0) j0 = 0;
                if (j1 > Wp) j1 = Wp;
                const float *s0 = src + b - pad;
                for (int j = j0; j < j1; j++) d[j] = s0[2 * j];
            }
        }
    }
}

/* xin  <-  img (Cin, Hin, Win) with its zero border (see the padded grid above).  Rows are
 * short (7 to 32 floats), so they are copied with vectors rather than memcpy calls. */
static void pad_image(float *xin, const float *img, const Pass *p) {
    if (p->stride == 2) {
        split_phases(xin, img, p);
        return;
    }
    const int W = p->Win, Wp = p->Wp, pad = p->pad;
    const size_t plane = (size_t)p->Hp * Wp;
    const float *img_end = img + (size_t)p->Cin * p->Hin * W;
    memset(xin, 0, (XIN_FRONT + (size_t)pad * Wp) * sizeof *xin);
    float *d = xin + XIN_FRONT + (size_t)pad * Wp;
    for (int c = 0; c < p->Cin; c++, d += plane) {
        for (int h = 0; h < p->Hin; h++) {
            const float *src = img + ((size_t)c * p->Hin + h) * W;
            float *dst = d + (size_t)h * Wp;
            int i = 0;
            for (; i + CV <= W; i += CV) cv_store(dst + i, cv_load(src + i));
            if (i < W && W >= CV) {
                cv_store(dst + W - CV, cv_load(src + W - CV)); /* overlapping tail */
            } else if (i < W && src + CV <= img_end) {
                /* A row shorter than a vector (14, 7, 4 px) as one whole vector while the
                 * image has that many floats left.  What it writes past the row is the
                 * row's zero columns (set next), later rows (copied after it), or the
                 * borders and slack (zeroed after the rows). */
                cv_store(dst, cv_load(src));
            } else {
                for (; i < W; i++) dst[i] = src[i];
            }
            for (int k = W; k < Wp; k++) dst[k] = 0;
        }
        /* the bottom border of this plane, and the top border of the next one */
        int rows = c + 1 < p->Cin ? 2 * pad : pad;
        memset(d + (size_t)p->Hin * Wp, 0, (size_t)rows * Wp * sizeof *xin);
    }
    memset(xin + XIN_FRONT + (size_t)p->Cin * plane, 0, XIN_SLACK * sizeof *xin);
}

/* ------------------------------------------------------------ forward and backward_input */

typedef struct Job {
    float *out, *workspace;
    const float *inp, *dout, *bias;
    const Conv2dSize *s;
    Pass pass;
    const float *wt;       /* rearranged weights (Cin*9, Coutp) */
    const int32_t *rows;   /* grid_rows of the pass's output */
    int tasks;
} Job;

/* row[p] = the grid position q = h*Wp + w of output position p = h*W + w. */
static void grid_rows(int32_t *row, int H, int W, int Wp) {
    for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++) row[h * W + w] = h * Wp + w;
}

/* out (C, HW) (+ bias)  <-  grid rows yt[row[p]*ldy + c], in CV x CV blocks. */
static void grid_to_planes(float *out, const float *yt, size_t ldy, int C, int HW, const int32_t *row,
                           const float *bias) {
    for (int c0 = 0; c0 < C; c0 += CV) {
        const int full = C - c0 >= CV;
        int p = 0;
        for (; full && p + CV <= HW; p += CV) {
            cvec r[CV];
#pragma GCC unroll 16
            for (int i = 0; i < CV; i++) r[i] = cv_load(yt + (size_t)row[p + i] * ldy + c0);
            transpose_block(r);
            float *o = out + (size_t)c0 * HW + p;
            if (bias) {
#pragma GCC unroll 16
                for (int k = 0; k < CV; k++) cv_store(o + (size_t)k * HW, r[k] + bias[c0 + k]);
            } else {
#pragma GCC unroll 16
                for (int k = 0; k < CV; k++) cv_store(o + (size_t)k * HW, r[k]);
            }
        }
        for (; p < HW; p++) {
            const float *src = yt + (size_t)row[p] * ldy + c0;
            for (int k = 0; k < CV && c0 + k < C; k++) out[(size_t)(c0 + k) * HW + p] = src[k] + (bias ? bias[c0 + k] : 0.0f);
        }
    }
}

/* grid rows gt[row[p]*ldg + c]  <-  planes (C, HW); rows of junk columns and lanes beyond C
 * are left as they are (the caller zeroes gt first). */
static void planes_to_grid(float *gt, size_t ldg, const float *planes, int C, int HW, const int32_t *row) {
    for (int c0 = 0; c0 < C; c0 += CV) {
        const int full = C - c0 >= CV;
        int p = 0;
        for (; full && p + CV <= HW; p += CV) {
            cvec r[CV];
            const float *src = planes + (size_t)c0 * HW + p;
#pragma GCC unroll 16
            for (int k = 0; k < CV; k++) r[k] = cv_load(src + (size_t)k * HW);
            transpose_block(r);
#pragma GCC unroll 16
            for (int i = 0; i < CV; i++) cv_store(gt + (size_t)row[p + i] * ldg + c0, r[i]);
        }
        for (; p < HW; p++) {
            float *dst = gt + (size_t)row[p] * ldg + c0;
            for (int k = 0; k < CV && c0 + k < C; k++) dst[k] = planes[(size_t)(c0 + k) * HW + p];
        }
    }
}

/* out (Cout, Hout, Wout) of one image from img (Cin, Hin, Win). */
static void product_image(float *out, const float *img, const Job *j, float *xin, float *yt) {
    const Pass *p = &j->pass;
    const size_t plane = p->plane, ldy = (size_t)p->Coutp;
    pad_image(xin, img, p);
    const float *x = grid_origin(xin, p);
#if CV == 16
    if (use_positions(p)) {
        const size_t ldq = (size_t)p->Q + POS_Q;
        for (int oc0 = 0; oc0 < p->Coutp; oc0 += POS_OC)
            for (int c0 = 0; c0 < p->Cin; c0 += IN_BLOCK) {
                const int cb = p->Cin - c0 < IN_BLOCK ? p->Cin - c0 : IN_BLOCK, add = c0 > 0;
                const float *w = j->wt + (size_t)c0 * 9 * ldy + oc0, *xc = x + c0 * plane;
                for (int q = 0; q < p->Q; q += POS_Q)
                    product_tile_pos(yt + (size_t)oc0 * ldq + q, ldq, xc + q, plane, p->tap, cb, w, ldy, add);
            }
        /* grid rows (h * Wp + w, junk columns dropped) to planes, + bias; rows of 16 or more
         * in vectors, the last one overlapping the one before */
        const int HW = p->Hout * p->Wout, W = p->Wout;
        for (int oc = 0; oc < p->Cout; oc++) {
            const float b = j->bias ? j->bias[oc] : 0.0f;
            for (int h = 0; h < p->Hout; h++) {
                const float *src = yt + (size_t)oc * ldq + (size_t)h * p->Wp;
                float *dst = out + (size_t)oc * HW + (size_t)h * W;
                if (W >= CV) {
                    int w = 0;
                    for (; w + CV <= W; w += CV) cv_store(dst + w, cv_load(src + w) + b);
                    if (w < W) cv_store(dst + W - CV, cv_load(src + W - CV) + b);
                } else {
                    for (int w = 0; w < W; w++) dst[w] = src[w] + b;
                }
            }
        }
        return;
    }
#endif
    for (int oc0 = 0; oc0 < p->Coutp;) {
        int left = (p->Coutp - oc0) / CV;
        const int ocv = OCV_MAX >= 4 && left >= 4 ? 4 : left >= 2 ? 2 : 1;
        float *y = yt + oc0;
        for (int c0 = 0; c0 < p->Cin; c0 += IN_BLOCK) {
            const int cb = p->Cin - c0 < IN_BLOCK ? p->Cin - c0 : IN_BLOCK, add = c0 > 0;
            const float *w = j->wt + (size_t)c0 * 9 * ldy + oc0, *xc = x + c0 * plane;
#if OCV_MAX >= 4
            if (ocv == 4) {
                for (int q = 0; q < p->Q; q += PB4)
                    product_tile4(y + q * ldy, ldy, xc + q, plane, p->tap, cb, w, ldy, add);
                continue;
            }
#endif
            if (ocv == 2) {
                for (int q = 0; q < p->Q; q += PB2)
                    product_tile2(y + q * ldy, ldy, xc + q, plane, p->tap, cb, w, ldy, add);
                continue;
            }
            for (int q = 0; q < p->Q; q += PB1) product_tile1(y + q * ldy, ldy, xc + q, plane, p->tap, cb, w, ldy, add);
        }
        oc0 += ocv * CV;
    }
    grid_to_planes(out, yt, ldy, p->Cout, p->Hout * p->Wout, j->rows, j->bias);
}

/* The grid rows of the pass's output, in the shared workspace after the weights. */
static const int32_t *set_grid_rows(float *workspace, const Pass *p, const Conv2dSize *s) {
    int32_t *rows = (int32_t *)(void *)(workspace + weight_floats(s));
    grid_rows(rows, p->Hout, p->Wout, p->Wp);
    return rows;
}

static size_t thread_offset(const Conv2dSize *s, int thread) {
    return shared_floats(s) + (size_t)thread * thread_floats(s);
}

static void product_task(void *ctx, int n, int thread) {
    const Job *j = ctx;
    const Pass *p = &j->pass;
    float *xin = j->workspace + thread_offset(j->s, thread), *yt = xin + xin_floats(p);
    product_image(j->out + (size_t)n * p->Cout * p->Hout * p->Wout, j->inp + (size_t)n * p->Cin * p->Hin * p->Win,
                  j, xin, yt);
}

void conv3x3_forward(float *out, float *workspace, const float *inp, const float *weight,
                     const float *bias, const Conv2dSize *s) {
    Job j = {.out = out, .workspace = workspace, .inp = inp, .bias = bias, .s = s, .pass = forward_pass(s)};
    /* wt (C*9, OCP): row c*9 + tap = weight[:, c, tap], zero beyond OC */
    const int OCP = j.pass.Coutp;
    float *wt = workspace;
    for (int r = 0; r < s->C * 9; r++)
        for (int oc = 0; oc < OCP; oc++) wt[(size_t)r * OCP + oc] = oc < s->OC ? weight[(size_t)oc * s->C * 9 + r] : 0.0f;
    j.wt = wt;
    j.rows = set_grid_rows(workspace, &j.pass, s);
    threadpool_run(s->N, thread_count(s), product_task, &j);
}

void conv3x3_backward_input(float *dinp, float *workspace, const float *dout, const float *weight,
                            const Conv2dSize *s) {
    Job j = {.out = dinp, .workspace = workspace, .inp = dout, .s = s, .pass = backward_input_pass(s)};
    /* wt (OC*9, CP): row oc*9 + kh*3 + kw = weight[oc, :, 2-kh, 2-kw], zero beyond C */
    const int CP = j.pass.Coutp;
    float *wt = workspace;
    for (int oc = 0; oc < s->OC; oc++)
        for (int t = 0; t < 9; t++)
            for (int c = 0; c < CP; c++)
                wt[((size_t)oc * 9 + t) * CP + c] = c < s->C ? weight[((size_t)oc * s->C + c) * 9 + (8 - t)] : 0.0f;
    j.wt = wt;
    j.rows = set_grid_rows(workspace, &j.pass, s);
    threadpool_run(s->N, thread_count(s), product_task, &j);
}

/* ------------------------------------------------------------ backward_params */

/* Task t: its slice of the batch into its own dw (C*9, OCP). */
static void grad_task(void *ctx, int task, int thread) {
    const Job *j = ctx;
    const Conv2dSize *s = j->s;
    const Pass *p = &j->pass;
    const size_t plane = p->plane, ldg = (size_t)p->Coutp;
    float *xin = j->workspace + thread_offset(s, thread), *gt = xin + xin_floats(p);
    float *dw = j->workspace + shared_floats(s) + (size_t)thread_count(s) * thread_floats(s) +
                (size_t)task * task_floats(s);
    memset(dw, 0, task_floats(s) * sizeof *dw);
    long n0, n1;
    threadpool_split(s->N, j->tasks, task, &n0, &n1);
    for (long n = n0; n < n1; n++) {
        pad_image(xin, j->inp + (size_t)n * s->C * s->H * s->W, p);
        const float *x = grid_origin(xin, p);
        /* gt (Q, OCP) <- dout_n (OC, OH, OW), zero on the junk columns and beyond OC */
        memset(gt, 0, (size_t)p->Q * ldg * sizeof *gt);
        planes_to_grid(gt, ldg, j->dout + (size_t)n * s->OC * s->OH * s->OW, s->OC, s->OH * s->OW, j->rows);
        for (int oc0 = 0; oc0 < p->Coutp;) {
            int left = (p->Coutp - oc0) / CV;
#if CV == 16
            if (left >= 2) {
                for (int c = 0; c < s->C; c++)
                    grad_tile1x2(dw + (size_t)c * 9 * ldg + oc0, ldg, x + c * plane, plane, p->tap, gt + oc0, ldg, p->Q);
                oc0 += 2 * CV;
                continue;
            }
#else
            (void)left;
#endif
            int c = 0;
#if GRAD_CB1 == 3
            for (; c + 3 <= s->C; c += 3)
                grad_tile3x1(dw + (size_t)c * 9 * ldg + oc0, ldg, x + c * plane, plane, p->tap, gt + oc0, ldg, p->Q);
#endif
            for (; c < s->C; c++)
                grad_tile1x1(dw + (size_t)c * 9 * ldg + oc0, ldg, x + c * plane, plane, p->tap, gt + oc0, ldg, p->Q);
            oc0 += CV;
        }
    }
}

void conv3x3_backward_params(float *dweight, float *workspace, const float *dout, const float *inp,
                             const Conv2dSize *s) {
    Job j = {.workspace = workspace, .inp = inp, .dout = dout, .s = s, .pass = forward_pass(s)};
    j.rows = set_grid_rows(workspace, &j.pass, s);
    j.tasks = thread_count(s) < s->N ? thread_count(s) : s->N;
    threadpool_run(j.tasks, thread_count(s), grad_task, &j);
    /* dweight (OC, C, 3, 3) += the tasks' dw (C*9, OCP), in task order */
    const size_t OCP = (size_t)j.pass.Coutp;
    const float *dw = workspace + shared_floats(s) + (size_t)thread_count(s) * thread_floats(s);
    for (int oc = 0; oc < s->OC; oc++)
        for (int r = 0; r < s->C * 9; r++) {
            float sum = 0;
            for (int t = 0; t < j.tasks; t++) sum += dw[(size_t)t * task_floats(s) + r * OCP + oc];
            dweight[(size_t)oc * s->C * 9 + r] += sum;
        }
}
