/* core/nn/conv2d.c: 2-D convolution (nn.Conv2d, groups 1, dilation 1) by im2col + sgemm,
 * batch-parallel on the thread pool (core/threads.h).  3x3 convolutions go to the direct
 * kernels of conv3x3.c instead when s->use_3x3_kernel says so (the workspace is then theirs,
 * or the larger of both where a stride-2 input gradient still comes here).
 *
 * The weight (OC,C,KH,KW) is read as a matrix (OC, C*KH*KW) whose column (c*KH+kh)*KW+kw
 * matches row (c*KH+kh)*KW+kw of the im2col matrix, so one image's output (OC, OH*OW) is
 * weight @ col.  To keep sgemm's matrices wide when the feature maps are small, a chunk of
 * `images_per_gemm` = B images is laid side by side: col (CKK, B*OH*OW), one sgemm gives
 * (OC, B*OH*OW), and a cheap scatter puts it back in NCHW order.  When one image's columns
 * would not fit in L2 (a 7x7 stem on 224x224 inputs), B = 1 and the output rows are done in
 * bands of BAND_FLOATS.
 *
 * Threads: forward and backward_input hand out one task per chunk of images (per band in
 * the forward), each image's output written by exactly one task; sgemm runs
 * single-threaded inside the tasks (moco_gemm_blas_begin).  backward_params gives each of
 * s->threads tasks a contiguous slice of the images and a private dweight (task 0 adds
 * straight into the caller's), summed in task order afterwards, so the result does not
 * depend on timing.  A pointwise conv (1x1, stride 1, no padding) splits the larger of its
 * output and input channels instead, whatever its chunking (see backward_params_direct_task).
 *
 * Workspace, per thread t < s->threads (nothing in it survives a call, so every conv of a
 * network can share one):
 *     col  (CKK, B*OHOW), or (CKK, band) for banded images   absent on the direct 1x1 path
 *     gemm (OC,  B*OHOW)   only when B > 1    (gemm output, or the gathered dout)
 * followed by s->threads - 1 private dweights (OC, CKK) for backward_params.  The direct
 * 1x1 path has none of these; a pointwise conv's backward_params uses (C, OC) for
 * dweight^T when C > OC (the workspace is at least that). */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "error.h"
#include "nn/conv3x3.h"
#include "nn/nn.h"
#include "nn/vec.h"
#include "nn/winograd.h"
#include "threads.h"

/* Aim for at least this many sgemm columns per call: below it OpenBLAS spends its time on
 * packing rather than arithmetic. */
#define CONV_TARGET_COLUMNS 512
/* Largest im2col block (floats) of one image: 512 KiB, so that it and the packed panels
 * sgemm makes of it stay in a 1 MiB L2 (a 16-channel 28x28 3x3 layer, 441 KiB, is not
 * cut: its "same" im2col shortcut only applies to whole images). */
#define BAND_FLOATS (128 * 1024)

/* Where F(4x4, 3x3) beats the direct and im2col paths (measured on 2 cores, Sapphire
 * Rapids, batch 64-256, GFLOP/s-equivalent forward / input grad / weight grad): 64
 * channels at 32x32 410/401/328 against at best 249/198/141; 128 at 16x16 481/482/358;
 * 512 at 4x4 416-585 against 228; but 16-32 channels (7x7 to 28x28) 80-131 against the
 * direct kernels' 155-168: there the transforms cost more than the products save. */
static atomic_int winograd_enabled = 1;

int conv2d_set_winograd(int enabled) { return atomic_exchange(&winograd_enabled, enabled != 0); }

static int winograd_preferred(const Conv2dSize *s) {
    return winograd_applies(s) && s->C >= 64 && s->OC >= 64 && (s->H >= 8 || s->C >= 128);
}

/* Images per chunk: the fewest that give CONV_TARGET_COLUMNS columns, raised while that
 * shortens the busiest thread's share (chunks go one per task): 32 images of 7x7 in chunks
 * of 11 leave one of two threads 22 images and the other 10; in chunks of 16, 16 each. */
static int balanced_chunk(int N, int per_image, int threads) {
    int b = per_image >= CONV_TARGET_COLUMNS ? 1 : (CONV_TARGET_COLUMNS + per_image - 1) / per_image;
    if (b >= N) return N;
    if (b == 1) return 1;
    int best = b;
    long best_load = (long)((N + b - 1) / b + threads - 1) / threads * b;
    for (int c = b + 1; c <= 2 * b && c <= N; c++) {
        long load = (long)((N + c - 1) / c + threads - 1) / threads * c;
        if (load < best_load) best = c, best_load = load;
    }
    return best;
}

int conv2d_size_init(Conv2dSize *s, int N, int C, int H, int W, int OC, int KH, int KW, int stride,
                     int padding) {
    if (N < 1 || C < 1 || H < 1 || W < 1 || OC < 1 || KH < 1 || KW < 1)
        return moco_error("conv2d: sizes must be positive (N %d, C %d, H %d, W %d, out channels %d, "
                          "kernel %dx%d)", N, C, H, W, OC, KH, KW);
    if (stride < 1) return moco_error("conv2d: stride must be >= 1, got %d", stride);
    if (padding < 0) return moco_error("conv2d: padding must be >= 0, got %d", padding);
    if (H + 2 * padding < KH || W + 2 * padding < KW)
        return moco_error("conv2d: kernel %dx%d is larger than the padded input %dx%d (input %dx%d, "
                          "padding %d)", KH, KW, H + 2 * padding, W + 2 * padding, H, W, padding);
    s->N = N, s->C = C, s->H = H, s->W = W;
    s->OC = OC, s->KH = KH, s->KW = KW;
    s->stride = stride, s->padding = padding;
    s->OH = (H + 2 * padding - KH) / stride + 1;
    s->OW = (W + 2 * padding - KW) / stride + 1;
    int t = threadpool_size();
    s->threads = t < N ? t : N;
    s->images_per_gemm = balanced_chunk(N, s->OH * s->OW, s->threads);
    s->use_3x3_kernel = conv3x3_preferred(s);
    s->use_winograd = 0;
    s->use_winograd = atomic_load(&winograd_enabled) && winograd_preferred(s) && conv2d_winograd_status(NULL);
    return 0;
}

/* 1x1, stride 1, no padding: the input is its own im2col matrix. */
static int is_pointwise(const Conv2dSize *s) { return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->padding == 0; }

/* Pointwise with one image per product: forward and input gradient multiply the images in
 * place.  The weight gradient takes the direct path for every pointwise conv (see
 * backward_params_direct_task): on 14x14 and 7x7 maps the chunked path's copies (im2col
 * and the gathered dout) and its private dweights cost more than the narrow per-image
 * products; ResNet-50's layers at batch 32, 2 threads, median of 15 interleaved calls,
 * two alternations: 1024->256 at 14x14 253-265 -> 306-320 GFLOP/s, 1024->512 277 -> 335,
 * 512->2048 at 7x7 266-291 -> 289-317, 2048->512 218-226 -> 287-289. */
static int is_direct(const Conv2dSize *s) { return is_pointwise(s) && s->images_per_gemm <= 1; }

static int chunk_images(const Conv2dSize *s) { return s->images_per_gemm < 1 ? 1 : s->images_per_gemm; }
static int thread_count(const Conv2dSize *s) { return s->threads < 1 ? 1 : s->threads; }
static size_t ckk_of(const Conv2dSize *s) { return (size_t)s->C * s->KH * s->KW; }

/* Output rows per im2col band of one image (B = 1): all of them unless that exceeds
 * BAND_FLOATS. */
static int band_rows(const Conv2dSize *s) {
    if (chunk_images(s) > 1) return s->OH;
    size_t row = ckk_of(s) * (size_t)s->OW;
    int rows = row ? (int)(BAND_FLOATS / row) : s->OH;
    if (rows < 1) rows = 1;
    return rows < s->OH ? rows : s->OH;
}

/* Floats of one thread's slice. */
static size_t thread_floats(const Conv2dSize *s) {
    if (is_direct(s)) return 0;
    size_t b = (size_t)chunk_images(s), ohow = (size_t)s->OH * s->OW;
    if (b == 1) return ckk_of(s) * (size_t)band_rows(s) * s->OW;
    return ckk_of(s) * b * ohow + (size_t)s->OC * b * ohow;
}

static int use_winograd(const Conv2dSize *s) { return s->use_winograd && winograd_applies(s); }
static int use_3x3(const Conv2dSize *s) { return !use_winograd(s) && s->use_3x3_kernel && conv3x3_applies(s); }

static size_t im2col_workspace_size(const Conv2dSize *s);

size_t conv2d_workspace_size(const Conv2dSize *s) {
    if (use_winograd(s)) return winograd_workspace_size(s);
    if (use_3x3(s)) {
        size_t k = conv3x3_workspace_size(s), i = conv3x3_applies_backward_input(s) ? 0 : im2col_workspace_size(s);
        return k > i ? k : i;
    }
    return im2col_workspace_size(s);
}

static int direct_params_transposed(const Conv2dSize *s);

static size_t im2col_workspace_size(const Conv2dSize *s) {
    size_t direct = is_pointwise(s) && direct_params_transposed(s) ? (size_t)s->C * s->OC : 0; /* dweight^T */
    if (is_direct(s)) return direct;
    size_t T = (size_t)thread_count(s);
    size_t cols = T * thread_floats(s) + (T - 1) * (size_t)s->OC * ckk_of(s);
    return cols > direct ? cols : direct;
}

/* The range [lo, hi) of output columns ow whose input column ow*stride - padding + k lies
 * inside [0, extent). */
static void valid_range(int k, int extent, int out, int stride, int padding, int *lo, int *hi) {
    int first = padding - k; /* ow*stride >= first */
    int l = first <= 0 ? 0 : (first + stride - 1) / stride;
    int last = extent - 1 + padding - k; /* ow*stride <= last */
    int h = last < 0 ? 0 : last / stride + 1;
    *lo = l < out ? l : out;
    *hi = h < out ? h : out;
    if (*hi < *lo) *hi = *lo;
}

/* "Same" stride-1 convolutions (OH = H, OW = W: padding = (K-1)/2) have a shortcut: the
 * im2col row of kernel tap (kh, kw) is the input plane shifted by dh*W + dw (dh = kh -
 * padding, dw = kw - padding), except in the |dw| border columns, which would wrap to the
 * neighbouring row and must be zero, and the |dh| border rows.  One long copy plus a few
 * stores then replaces OH short row copies.  For a tap, same_shift_span gives the flat
 * range [*a, *b) of the output plane that the long copy covers (its ends clamped so the
 * source stays inside the plane; what is clamped off lies in the border columns). */
static int is_same_stride1(const Conv2dSize *s) {
    return s->stride == 1 && s->OH == s->H && s->OW == s->W;
}

static void same_shift_span(const Conv2dSize *s, int dh, int dw, long *a, long *b) {
    const long W = s->W, plane = (long)s->H * W, shift = dh * W + dw;
    long d0 = (dh < 0 ? -dh : 0) * W, d1 = (s->H - (dh > 0 ? dh : 0)) * W;
    *a = d0 > -shift ? d0 : -shift;
    *b = d1 < plane - shift ? d1 : plane - shift;
    if (*a > plane) *a = plane; /* maps smaller than the kernel: a tap may reach nothing */
    if (*b < *a) *b = *a;
}

/* Zeroes row r of the tap's plane-sized row d where its source column is outside [0, W). */
static void zero_border_columns(float *d, int W, int rows, int dw) {
    if (dw == 0) return;
    int c0 = dw < 0 ? 0 : W - dw, c1 = dw < 0 ? -dw : W;
    if (c0 < 0) c0 = 0;
    if (c1 > W) c1 = W;
    for (int r = 0; r < rows; r++)
        for (int c = c0; c < c1; c++) d[(size_t)r * W + c] = 0;
}

static void im2col_same(float *col, size_t ldc, const float *img, const Conv2dSize *s) {
    const int H = s->H, W = s->W;
    for (int c = 0; c < s->C; c++) {
        const float *plane = img + (size_t)c * H * W;
        for (int kh = 0; kh < s->KH; kh++) {
            for (int kw = 0; kw < s->KW; kw++) {
                float *dst = col + ((size_t)(c * s->KH + kh) * s->KW + kw) * ldc;
                const int dh = kh - s->padding, dw = kw - s->padding;
                long a, b;
                same_shift_span(s, dh, dw, &a, &b);
                memset(dst, 0, (size_t)a * sizeof *dst);
                memcpy(dst + a, plane + a + (long)dh * W + dw, (size_t)(b - a) * sizeof *dst);
                memset(dst + b, 0, (size_t)((long)H * W - b) * sizeof *dst);
                zero_border_columns(dst, W, H, dw);
            }
        }
    }
}

/* The adjoint of im2col_same; it zeroes the border columns of col first (col is scratch). */
static void col2im_same_add(float *img, float *col, size_t ldc, const Conv2dSize *s) {
    const int H = s->H, W = s->W;
    for (int c = 0; c < s->C; c++) {
        float *plane = img + (size_t)c * H * W;
        for (int kh = 0; kh < s->KH; kh++) {
            for (int kw = 0; kw < s->KW; kw++) {
                float *src = col + ((size_t)(c * s->KH + kh) * s->KW + kw) * ldc;
                const int dh = kh - s->padding, dw = kw - s->padding;
                long a, b;
                same_shift_span(s, dh, dw, &a, &b);
                zero_border_columns(src, W, H, dw);
                vec_add_into(plane + a + (long)dh * W + dw, src + a, (size_t)(b - a));
            }
        }
    }
}

/* col rows (CKK) x columns [0, (oh1-oh0)*OW) at row stride ldc  <-  output rows [oh0, oh1)
 * of one image img (C,H,W). */
static void im2col(float *col, size_t ldc, const float *img, int oh0, int oh1, const Conv2dSize *s) {
    if (oh0 == 0 && oh1 == s->OH && is_same_stride1(s)) {
        im2col_same(col, ldc, img, s);
        return;
    }
    const int H = s->H, W = s->W, OW = s->OW, st = s->stride, pad = s->padding;
    for (int c = 0; c < s->C; c++) {
        const float *plane = img + (size_t)c * H * W;
        for (int kh = 0; kh < s->KH; kh++) {
            for (int kw = 0; kw < s->KW; kw++) {
                float *dst = col + ((size_t)(c * s->KH + kh) * s->KW + kw) * ldc;
                int lo, hi;
                valid_range(kw, W, OW, st, pad, &lo, &hi);
                for (int oh = oh0; oh < oh1; oh++) {
                    float *d = dst + (size_t)(oh - oh0) * OW;
                    int ih = oh * st - pad + kh;
                    if (ih < 0 || ih >= H) {
                        memset(d, 0, (size_t)OW * sizeof *d);
                        continue;
                    }
                    for (int ow = 0; ow < lo; ow++) d[ow] = 0;
                    if (lo < hi) {
                        /* the input column of output column lo */
                        const float *src = plane + (size_t)ih * W + (lo * st - pad + kw);
                        if (st == 1)
                            memcpy(d + lo, src, (size_t)(hi - lo) * sizeof *d);
                        else
                            for (int j = 0; j < hi - lo; j++) d[lo + j] = src[(size_t)j * st];
                    }
                    for (int ow = hi; ow < OW; ow++) d[ow] = 0;
                }
            }
        }
    }
}

/* img (C,H,W) += the columns of col for output rows [oh0, oh1) (the adjoint of im2col).
 * col is scratch: the "same" shortcut overwrites part of it. */
static void col2im_add(float *img, float *col, size_t ldc, int oh0, int oh1, const Conv2dSize *s) {
    if (oh0 == 0 && oh1 == s->OH && is_same_stride1(s)) {
        col2im_same_add(img, col, ldc, s);
        return;
    }
    const int H = s->H, W = s->W, OW = s->OW, st = s->stride, pad = s->padding;
    for (int c = 0; c < s->C; c++) {
        float *plane = img + (size_t)c * H * W;
        for (int kh = 0; kh < s->KH; kh++) {
            for (int kw = 0; kw < s->KW; kw++) {
                const float *src = col + ((size_t)(c * s->KH + kh) * s->KW + kw) * ldc;
                int lo, hi;
                valid_range(kw, W, OW, st, pad, &lo, &hi);
                if (lo >= hi) continue;
                for (int oh = oh0; oh < oh1; oh++) {
                    int ih = oh * st - pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    const float *srow = src + (size_t)(oh - oh0) * OW + lo;
                    float *d = plane + (size_t)ih * W + (lo * st - pad + kw);
                    if (st == 1) {
                        vec_add_into(d, srow, (size_t)(hi - lo));
                    } else {
                        for (int j = 0; j < hi - lo; j++) d[(size_t)j * st] += srow[j];
                    }
                }
            }
        }
    }
}

/* g (OC, b*ohow) at row stride ld  <-  dout images n0 .. n0+b-1. */
static void gather_dout(float *g, size_t ld, const float *dout, int n0, int b, const Conv2dSize *s) {
    const size_t ohow = (size_t)s->OH * s->OW, out_image = (size_t)s->OC * ohow;
    for (int i = 0; i < b; i++)
        for (int oc = 0; oc < s->OC; oc++)
            memcpy(g + (size_t)oc * ld + i * ohow, dout + (size_t)(n0 + i) * out_image + oc * ohow,
                   ohow * sizeof *g);
}

/* ------------------------------------------------------------ forward */

typedef struct ConvJob {
    float *out, *dinp, *dweight, *workspace;
    const float *inp, *dout, *weight, *bias;
    const Conv2dSize *s;
    int bands;  /* bands per image (forward, B = 1) */
    int tasks;  /* backward_params: slices of the batch */
} ConvJob;

/* One image's output rows [oh0, oh1) (B = 1), written straight by sgemm on top of the bias. */
static void forward_band(const ConvJob *j, float *ws, int n, int oh0, int oh1) {
    const Conv2dSize *s = j->s;
    const int ohow = s->OH * s->OW, ckk = (int)ckk_of(s), OC = s->OC;
    const int cols = (oh1 - oh0) * s->OW;
    float *o = j->out + (size_t)n * OC * ohow + (size_t)oh0 * s->OW;
    const float *col = j->inp + (size_t)n * s->C * s->H * s->W;
    int ldcol = ohow;
    if (!is_direct(s)) {
        im2col(ws, (size_t)cols, col, oh0, oh1, s);
        col = ws, ldcol = cols;
    }
    if (j->bias)
        for (int oc = 0; oc < OC; oc++)
            for (int p = 0; p < cols; p++) o[(size_t)oc * ohow + p] = j->bias[oc];
    moco_sgemm(0, 0, OC, cols, ckk, 1.0f, j->weight, ckk, col, ldcol,
                j->bias ? 1.0f : 0.0f, o, ohow);
}

static void forward_task(void *ctx, int task, int thread) {
    const ConvJob *j = ctx;
    const Conv2dSize *s = j->s;
    float *ws = j->workspace ? j->workspace + (size_t)thread * thread_floats(s) : NULL;
    const int B = chunk_images(s);
    if (B == 1) {
        int n = task / j->bands, band = task % j->bands, rows = band_rows(s);
        int oh0 = band * rows, oh1 = oh0 + rows < s->OH ? oh0 + rows : s->OH;
        forward_band(j, ws, n, oh0, oh1);
        return;
    }
    const int ohow = s->OH * s->OW, ckk = (int)ckk_of(s), OC = s->OC;
    const size_t in_image = (size_t)s->C * s->H * s->W, out_image = (size_t)OC * ohow;
    const int n0 = task * B, b = s->N - n0 < B ? s->N - n0 : B;
    const size_t ld = (size_t)B * ohow; /* row stride of col and of the gemm output */
    float *col = ws, *tmp = ws + (size_t)ckk * ld;
    for (int i = 0; i < b; i++) im2col(col + (size_t)i * ohow, ld, j->inp + (size_t)(n0 + i) * in_image, 0, s->OH, s);
    moco_sgemm(0, 0, OC, b * ohow, ckk, 1.0f, j->weight, ckk, col,
                (int)ld, 0.0f, tmp, (int)ld);
    for (int i = 0; i < b; i++) {
        float *o = j->out + (size_t)(n0 + i) * out_image;
        for (int oc = 0; oc < OC; oc++) {
            const float *t = tmp + (size_t)oc * ld + (size_t)i * ohow;
            float *d = o + (size_t)oc * ohow;
            float bv = j->bias ? j->bias[oc] : 0.0f;
            for (int p = 0; p < ohow; p++) d[p] = t[p] + bv;
        }
    }
}

static int chunk_count(const Conv2dSize *s) { return (s->N + chunk_images(s) - 1) / chunk_images(s); }

void conv2d_forward(float *out, float *workspace, const float *inp, const float *weight,
                    const float *bias, const Conv2dSize *s) {
    if (use_winograd(s)) {
        winograd_forward(out, workspace, inp, weight, bias, s);
        return;
    }
    if (use_3x3(s)) {
        conv3x3_forward(out, workspace, inp, weight, bias, s);
        return;
    }
    ConvJob j = {.out = out, .workspace = workspace, .inp = inp, .weight = weight, .bias = bias, .s = s};
    j.bands = (s->OH + band_rows(s) - 1) / band_rows(s);
    int tasks = chunk_images(s) == 1 ? s->N * j.bands : chunk_count(s);
    int blas = thread_count(s) > 1 ? moco_gemm_blas_begin() : 1;
    threadpool_run(tasks, thread_count(s), forward_task, &j);
    moco_gemm_blas_end(blas);
}

/* ------------------------------------------------------------ backward_input */

static void backward_input_task(void *ctx, int task, int thread) {
    const ConvJob *j = ctx;
    const Conv2dSize *s = j->s;
    const int ohow = s->OH * s->OW, ckk = (int)ckk_of(s), OC = s->OC;
    const size_t in_image = (size_t)s->C * s->H * s->W, out_image = (size_t)OC * ohow;
    const int B = chunk_images(s);
    if (is_direct(s)) {
        /* dinp_n (C, HW) = weight^T (C, OC) @ dout_n (OC, HW) */
        moco_sgemm(1, 0, s->C, ohow, OC, 1.0f, j->weight, s->C,
                    j->dout + (size_t)task * out_image, ohow, 0.0f, j->dinp + (size_t)task * in_image, ohow);
        return;
    }
    float *ws = j->workspace + (size_t)thread * thread_floats(s);
    const int n0 = task * B, b = s->N - n0 < B ? s->N - n0 : B;
    if (B == 1) {
        /* In bands of output rows: dcol (CKK, rows*OW) = weight^T @ those rows of dout, added
         * into the image band by band (bands overlap in input rows, so one task does all). */
        const int rows = band_rows(s);
        float *img = j->dinp + (size_t)n0 * in_image;
        memset(img, 0, in_image * sizeof *img);
        for (int oh0 = 0; oh0 < s->OH; oh0 += rows) {
            int oh1 = oh0 + rows < s->OH ? oh0 + rows : s->OH, cols = (oh1 - oh0) * s->OW;
            moco_sgemm(1, 0, ckk, cols, OC, 1.0f, j->weight, ckk,
                        j->dout + (size_t)n0 * out_image + (size_t)oh0 * s->OW, ohow, 0.0f, ws, cols);
            col2im_add(img, ws, (size_t)cols, oh0, oh1, s);
        }
        return;
    }
    const size_t ld = (size_t)B * ohow;
    float *dcol = ws, *g = ws + (size_t)ckk * ld;
    gather_dout(g, ld, j->dout, n0, b, s);
    /* dcol (CKK, b*ohow) = weight^T (CKK, OC) @ g (OC, b*ohow) */
    moco_sgemm(1, 0, ckk, b * ohow, OC, 1.0f, j->weight, ckk, g, (int)ld,
                0.0f, dcol, (int)ld);
    for (int i = 0; i < b; i++) {
        float *img = j->dinp + (size_t)(n0 + i) * in_image;
        memset(img, 0, in_image * sizeof *img);
        col2im_add(img, dcol + (size_t)i * ohow, ld, 0, s->OH, s);
    }
}

void conv2d_backward_input(float *dinp, float *workspace, const float *dout, const float *weight,
                           const Conv2dSize *s) {
    if (use_winograd(s)) {
        winograd_backward_input(dinp, workspace, dout, weight, s);
        return;
    }
    if (use_3x3(s) && conv3x3_applies_backward_input(s)) {
        conv3x3_backward_input(dinp, workspace, dout, weight, s);
        return;
    }
    ConvJob j = {.dinp = dinp, .workspace = workspace, .dout = dout, .weight = weight, .s = s};
    int blas = thread_count(s) > 1 ? moco_gemm_blas_begin() : 1;
    threadpool_run(is_direct(s) ? s->N : chunk_count(s), thread_count(s), backward_input_task, &j);
    moco_gemm_blas_end(blas);
}

/* ------------------------------------------------------------ backward_params */

/* Task t of j->tasks: dw (OC, CKK) += the gradient from its slice of the batch. */
static void backward_params_task(void *ctx, int task, int thread) {
    const ConvJob *j = ctx;
    const Conv2dSize *s = j->s;
    const int ohow = s->OH * s->OW, ckk = (int)ckk_of(s), OC = s->OC, B = chunk_images(s);
    const size_t in_image = (size_t)s->C * s->H * s->W, out_image = (size_t)OC * ohow;
    float *ws = j->workspace + (size_t)thread * thread_floats(s);
    float *dw = j->dweight;
    if (task > 0) {
        dw = j->workspace + (size_t)thread_count(s) * thread_floats(s) + (size_t)(task - 1) * OC * ckk;
        memset(dw, 0, (size_t)OC * ckk * sizeof *dw);
    }
    long c0, c1; /* this task's chunks */
    threadpool_split(chunk_count(s), j->tasks, task, &c0, &c1);
    for (long c = c0; c < c1; c++) {
        const int n0 = (int)c * B, b = s->N - n0 < B ? s->N - n0 : B;
        if (B == 1) {
            const int rows = band_rows(s);
            for (int oh0 = 0; oh0 < s->OH; oh0 += rows) {
                int oh1 = oh0 + rows < s->OH ? oh0 + rows : s->OH, cols = (oh1 - oh0) * s->OW;
                im2col(ws, (size_t)cols, j->inp + (size_t)n0 * in_image, oh0, oh1, s);
                /* dw (OC, CKK) += dout rows (OC, cols) @ col^T (cols, CKK) */
                moco_sgemm(0, 1, OC, ckk, cols, 1.0f,
                            j->dout + (size_t)n0 * out_image + (size_t)oh0 * s->OW, ohow, ws, cols, 1.0f, dw, ckk);
            }
            continue;
        }
        const size_t ld = (size_t)B * ohow;
        float *col = ws, *g = ws + (size_t)ckk * ld;
        for (int i = 0; i < b; i++) im2col(col + (size_t)i * ohow, ld, j->inp + (size_t)(n0 + i) * in_image, 0, s->OH, s);
        gather_dout(g, ld, j->dout, n0, b, s);
        /* dw (OC, CKK) += g (OC, b*ohow) @ col^T (b*ohow, CKK) */
        moco_sgemm(0, 1, OC, ckk, b * ohow, 1.0f, g, (int)ld, col, (int)ld,
                    1.0f, dw, ckk);
    }
}

/* The 1x1 stride-1 path: dweight (OC, C) += sum over images of dout_n (OC, HW) @ inp_n^T.
 * Both factors run along HW, so the product packs one of them, transposed, for every image;
 * it pays for that only when the rows it sweeps past the packed panels are many.  So the
 * larger of OC and C is the rows (split between the tasks, read in place) and the smaller
 * is packed: with C > OC the tasks compute dweight^T (C, OC) = sum inp_n @ dout_n^T into the
 * workspace, zeroed first, and add it back transposed (256 -> 64 channels on 56x56 maps:
 * 1.6x faster per thread than splitting OC).  Each element is one task's, summed over
 * images in order, and every product is the same sum over HW in either orientation, so the
 * result is the same for any number of threads. */
static int direct_params_transposed(const Conv2dSize *s) { return s->C > s->OC; }

static void backward_params_direct_task(void *ctx, int task, int thread) {
    (void)thread;
    const ConvJob *j = ctx;
    const Conv2dSize *s = j->s;
    const int hw = s->OH * s->OW, C = s->C, OC = s->OC;
    long lo, hi;
    if (direct_params_transposed(s)) {
        threadpool_split(C, j->tasks, task, &lo, &hi);
        float *dwt = j->workspace + (size_t)lo * OC; /* rows [lo, hi) of dweight^T */
        memset(dwt, 0, (size_t)(hi - lo) * OC * sizeof *dwt);
        for (int n = 0; n < s->N; n++)
            moco_sgemm(0, 1, (int)(hi - lo), OC, hw, 1.0f, j->inp + ((size_t)n * C + lo) * hw, hw,
                        j->dout + (size_t)n * OC * hw, hw, 1.0f, dwt, OC);
        for (int oc = 0; oc < OC; oc++)
            for (long c = lo; c < hi; c++) j->dweight[(size_t)oc * C + c] += j->workspace[(size_t)c * OC + oc];
        return;
    }
    threadpool_split(OC, j->tasks, task, &lo, &hi);
    for (int n = 0; n < s->N; n++)
        moco_sgemm(0, 1, (int)(hi - lo), C, hw, 1.0f,
                    j->dout + ((size_t)n * OC + lo) * hw, hw, j->inp + (size_t)n * C * hw, hw, 1.0f,
                    j->dweight + (size_t)lo * C, C);
}

/* dweight += the private sums of tasks 1 .. tasks-1, in task order; task = a range of
 * the weight's elements. */
static void reduce_task(void *ctx, int task, int thread) {
    (void)thread;
    const ConvJob *j = ctx;
    const Conv2dSize *s = j->s;
    const size_t size = (size_t)s->OC * ckk_of(s);
    const float *priv = j->workspace + (size_t)thread_count(s) * thread_floats(s);
    long lo, hi;
    threadpool_split((long)size, thread_count(s), task, &lo, &hi);
    for (int t = 1; t < j->tasks; t++) vec_add_into(j->dweight + lo, priv + (t - 1) * size + lo, (size_t)(hi - lo));
}

void conv2d_backward_params(float *dweight, float *dbias, float *workspace, const float *dout,
                            const float *inp, const Conv2dSize *s) {
    const int ohow = s->OH * s->OW, OC = s->OC;
    const size_t out_image = (size_t)OC * ohow;
    if (dbias) {
        for (int oc = 0; oc < OC; oc++) {
            double acc = 0;
            for (int n = 0; n < s->N; n++) {
                const float *d = dout + (size_t)n * out_image + (size_t)oc * ohow;
                vecf part = {0};
                int p = 0;
                for (; p + VEC_WIDTH <= ohow; p += VEC_WIDTH) part += vec_load(d + p);
                float rest = 0;
                for (; p < ohow; p++) rest += d[p];
                acc += vec_sum(part) + rest;
            }
            dbias[oc] += (float)acc;
        }
    }
    if (use_winograd(s)) {
        winograd_backward_params(dweight, workspace, dout, inp, s);
        return;
    }
    if (use_3x3(s)) {
        conv3x3_backward_params(dweight, workspace, dout, inp, s);
        return;
    }
    ConvJob j = {.dweight = dweight, .workspace = workspace, .dout = dout, .inp = inp, .s = s};
    int blas = thread_count(s) > 1 ? moco_gemm_blas_begin() : 1;
    if (is_pointwise(s)) {
        int rows = direct_params_transposed(s) ? s->C : OC;
        j.tasks = thread_count(s) < rows ? thread_count(s) : rows;
        threadpool_run(j.tasks, thread_count(s), backward_params_direct_task, &j);
    } else {
        j.tasks = thread_count(s) < chunk_count(s) ? thread_count(s) : chunk_count(s);
        threadpool_run(j.tasks, thread_count(s), backward_params_task, &j);
        if (j.tasks > 1) threadpool_run(thread_count(s), thread_count(s), reduce_task, &j);
    }
    moco_gemm_blas_end(blas);
}

/* ------------------------------------------------------------ Winograd start-up check */

static pthread_once_t winograd_once = PTHREAD_ONCE_INIT;
static _Thread_local int winograd_checking; /* the check's own conv2d_size_init */
static int winograd_ok;
static char winograd_why[200];

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

/* The largest |a - b| over n, relative to max |b| (NaN counts as infinitely far). */
static double relative_error(const float *a, const float *b, size_t n) {
    double m = 0, scale = max_abs(b, n);
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return scale > 0 ? m / scale : m;
}

/* One small convolution (partial tiles, padded channel blocks) in all three passes, by
 * Winograd and by im2col + sgemm, within 1e-4 of the largest value (F(4x4, 3x3) rounds to
 * about 1e-5 here; a wrong kernel or transform is off by O(1)). */
static void winograd_check(void) {
    const char *env = getenv("MOCO_WINOGRAD");
    if (env && strcmp(env, "0") == 0) {
        snprintf(winograd_why, sizeof winograd_why, "turned off by MOCO_WINOGRAD=0");
        return;
    }
    Conv2dSize w, r;
    winograd_checking = 1;
    int rc = conv2d_size_init(&r, 2, 40, 9, 11, 72, 3, 3, 1, 1);
    winograd_checking = 0;
    if (rc) return;
    r.use_3x3_kernel = 0, r.use_winograd = 0;
    w = r;
    w.use_winograd = 1;
    if (!winograd_applies(&w)) {
        snprintf(winograd_why, sizeof winograd_why, "needs libmoco's own matrix kernel (%s)", moco_gemm_backend());
        return;
    }
    size_t ni = (size_t)2 * 40 * 9 * 11, no = (size_t)2 * 72 * 9 * 11, nw = (size_t)72 * 40 * 9;
    size_t wsf = winograd_workspace_size(&w), wsr = conv2d_workspace_size(&r);
    float *buf = malloc(sizeof(float) * (3 * (ni + no + nw) + 72 + (wsf > wsr ? wsf : wsr)));
    if (!buf) {
        snprintf(winograd_why, sizeof winograd_why, "out of memory in the start-up check");
        return;
    }
    float *x = buf, *dy = x + ni, *wt = dy + no, *bias = wt + nw, *y0 = bias + 72, *y1 = y0 + no, *dx0 = y1 + no,
          *dx1 = dx0 + ni, *dw0 = dx1 + ni, *dw1 = dw0 + nw, *ws = dw1 + nw;
    unsigned st = 12345;
    float *fill[] = {x, dy, wt, bias};
    size_t cnt[] = {ni, no, nw, 72};
    for (int a = 0; a < 4; a++)
        for (size_t i = 0; i < cnt[a]; i++) {
            st = st * 1664525u + 1013904223u;
            fill[a][i] = (float)((st >> 8) & 0xffff) / 32768.0f - 1.0f;
        }
    memset(dw0, 0, nw * sizeof *dw0), memset(dw1, 0, nw * sizeof *dw1);
    conv2d_forward(y0, ws, x, wt, bias, &r), winograd_forward(y1, ws, x, wt, bias, &w);
    conv2d_backward_input(dx0, ws, dy, wt, &r), winograd_backward_input(dx1, ws, dy, wt, &w);
    conv2d_backward_params(dw0, NULL, ws, dy, x, &r), winograd_backward_params(dw1, ws, dy, x, &w);
    double ef = relative_error(y1, y0, no), ei = relative_error(dx1, dx0, ni), ew = relative_error(dw1, dw0, nw);
    free(buf);
    if (ef <= 1e-4 && ei <= 1e-4 && ew <= 1e-4) {
        winograd_ok = 1;
        snprintf(winograd_why, sizeof winograd_why, "checked at start-up (relative error %.1e / %.1e / %.1e)", ef,
                 ei, ew);
    } else {
        snprintf(winograd_why, sizeof winograd_why,
                 "start-up check failed: relative error forward %.3g, input grad %.3g, weight grad %.3g", ef, ei, ew);
    }
}

int conv2d_winograd_status(const char **why) {
    if (winograd_checking) return 0;
    pthread_once(&winograd_once, winograd_check);
    if (why) *why = winograd_why;
    return winograd_ok;
}
