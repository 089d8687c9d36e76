/* core/nn/conv2d.c: 2-D convolution (nn.Conv2d, groups 1, dilation 1) by im2col + sgemm.
 *
 * The weight (OC,C,KH,KW) is read as a matrix (OC, C*KH*KW) whose column (c*KH+kh)*KW+kw
 * matches row (c*KH+kh)*KW+kw of the im2col matrix, so one image's output (OC, OH*OW) is
 * weight @ col.  To keep sgemm's matrices wide when the feature maps are small, a chunk of
 * `images_per_gemm` = B images is laid side by side: col (CKK, B*OH*OW), one sgemm gives
 * (OC, B*OH*OW), and a cheap scatter puts it back in NCHW order.  The workspace holds
 *     col  (CKK, B*OHOW)                      (absent on the direct 1x1 path)
 *     gemm (OC,  B*OHOW)   only when B > 1    (gemm output, or the gathered dout)
 * and nothing in it survives a call, so every conv of a network can share one. */
#include <cblas.h>
#include <string.h>

#include "error.h"
#include "nn/nn.h"

/* Aim for at least this many sgemm columns per call: below it OpenBLAS spends its time on
 * packing and thread start-up rather than arithmetic. */
#define CONV_TARGET_COLUMNS 512

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
    int per_image = s->OH * s->OW;
    int b = per_image >= CONV_TARGET_COLUMNS ? 1 : (CONV_TARGET_COLUMNS + per_image - 1) / per_image;
    s->images_per_gemm = b < N ? b : N;
    return 0;
}

static int is_direct(const Conv2dSize *s) {
    return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->padding == 0 && s->images_per_gemm <= 1;
}

static int chunk_images(const Conv2dSize *s) { return s->images_per_gemm < 1 ? 1 : s->images_per_gemm; }

size_t conv2d_workspace_size(const Conv2dSize *s) {
    if (is_direct(s)) return 0;
    size_t b = (size_t)chunk_images(s), ohow = (size_t)s->OH * s->OW;
    size_t ckk = (size_t)s->C * s->KH * s->KW;
    return ckk * b * ohow + (b > 1 ? (size_t)s->OC * b * ohow : 0);
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

/* col rows (CKK) x columns [0, OHOW) at row stride ldc  <-  one image img (C,H,W). */
static void im2col(float *col, size_t ldc, const float *img, const Conv2dSize *s) {
    const int H = s->H, W = s->W, OH = s->OH, OW = s->OW, st = s->stride, pad = s->padding;
    for (int c = 0; c < s->C; c++) {
        const float *plane = img + (size_t)c * H * W;
        for (int kh = 0; kh < s->KH; kh++) {
            for (int kw = 0; kw < s->KW; kw++) {
                float *dst = col + ((size_t)(c * s->KH + kh) * s->KW + kw) * ldc;
                int lo, hi;
                valid_range(kw, W, OW, st, pad, &lo, &hi);
                for (int oh = 0; oh < OH; oh++) {
                    float *d = dst + (size_t)oh * OW;
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

/* img (C,H,W) += the columns of col (the adjoint of im2col); img must be zeroed first. */
static void col2im_add(float *img, const float *col, size_t ldc, const Conv2dSize *s) {
    const int H = s->H, W = s->W, OH = s->OH, OW = s->OW, st = s->stride, pad = s->padding;
    for (int c = 0; c < s->C; c++) {
        float *plane = img + (size_t)c * H * W;
        for (int kh = 0; kh < s->KH; kh++) {
            for (int kw = 0; kw < s->KW; kw++) {
                const float *src = col + ((size_t)(c * s->KH + kh) * s->KW + kw) * ldc;
                int lo, hi;
                valid_range(kw, W, OW, st, pad, &lo, &hi);
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * st - pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    if (lo >= hi) continue;
                    const float *srow = src + (size_t)oh * OW + lo;
                    float *d = plane + (size_t)ih * W + (lo * st - pad + kw);
                    if (st == 1) {
                        for (int j = 0; j < hi - lo; j++) d[j] += srow[j];
                    } else {
                        for (int j = 0; j < hi - lo; j++) d[(size_t)j * st] += srow[j];
                    }
                }
            }
        }
    }
}

void conv2d_forward(float *out, float *workspace, const float *inp, const float *weight,
                    const float *bias, const Conv2dSize *s) {
    const int ohow = s->OH * s->OW, ckk = s->C * s->KH * s->KW, OC = s->OC;
    const size_t in_image = (size_t)s->C * s->H * s->W, out_image = (size_t)OC * ohow;
    const int direct = is_direct(s), B = chunk_images(s);
    for (int n0 = 0; n0 < s->N; n0 += B) {
        int b = s->N - n0 < B ? s->N - n0 : B;
        if (b == 1 && B == 1) {
            /* One image: sgemm writes straight into out, on top of the bias. */
            float *o = out + (size_t)n0 * out_image;
            const float *col = inp + (size_t)n0 * in_image;
            if (!direct) {
                im2col(workspace, (size_t)ohow, col, s);
                col = workspace;
            }
            if (bias)
                for (int oc = 0; oc < OC; oc++)
                    for (int p = 0; p < ohow; p++) o[(size_t)oc * ohow + p] = bias[oc];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, ohow, ckk, 1.0f, weight, ckk,
                        col, ohow, bias ? 1.0f : 0.0f, o, ohow);
            continue;
        }
        size_t ld = (size_t)B * ohow; /* row stride of col and of the gemm output */
        float *col = workspace, *tmp = workspace + (size_t)ckk * ld;
        for (int i = 0; i < b; i++) im2col(col + (size_t)i * ohow, ld, inp + (size_t)(n0 + i) * in_image, s);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, b * ohow, ckk, 1.0f, weight, ckk,
                    col, (int)ld, 0.0f, tmp, (int)ld);
        for (int i = 0; i < b; i++) {
            float *o = out + (size_t)(n0 + i) * out_image;
            for (int oc = 0; oc < OC; oc++) {
                const float *t = tmp + (size_t)oc * ld + (size_t)i * ohow;
                float *d = o + (size_t)oc * ohow;
                float bv = bias ? bias[oc] : 0.0f;
                for (int p = 0; p < ohow; p++) d[p] = t[p] + bv;
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

void conv2d_backward_input(float *dinp, float *workspace, const float *dout, const float *weight,
                           const Conv2dSize *s) {
    const int ohow = s->OH * s->OW, ckk = s->C * s->KH * s->KW, OC = s->OC;
    const size_t in_image = (size_t)s->C * s->H * s->W, out_image = (size_t)OC * ohow;
    const int B = chunk_images(s);
    if (is_direct(s)) {
        /* dinp_n (C, HW) = weight^T (C, OC) @ dout_n (OC, HW) */
        for (int n = 0; n < s->N; n++)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->C, ohow, OC, 1.0f, weight, s->C,
                        dout + (size_t)n * out_image, ohow, 0.0f, dinp + (size_t)n * in_image, ohow);
        return;
    }
    for (int n0 = 0; n0 < s->N; n0 += B) {
        int b = s->N - n0 < B ? s->N - n0 : B;
        size_t ld = (size_t)B * ohow;
        float *dcol = workspace;
        const float *g = dout + (size_t)n0 * out_image;
        size_t ldg = (size_t)ohow;
        if (B > 1) {
            float *gb = workspace + (size_t)ckk * ld;
            gather_dout(gb, ld, dout, n0, b, s);
            g = gb, ldg = ld;
        }
        /* dcol (CKK, b*ohow) = weight^T (CKK, OC) @ g (OC, b*ohow) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ckk, b * ohow, OC, 1.0f, weight, ckk, g,
                    (int)ldg, 0.0f, dcol, (int)ld);
        for (int i = 0; i < b; i++) {
            float *img = dinp + (size_t)(n0 + i) * in_image;
            memset(img, 0, in_image * sizeof *img);
            col2im_add(img, dcol + (size_t)i * ohow, ld, s);
        }
    }
}

void conv2d_backward_params(float *dweight, float *dbias, float *workspace, const float *dout,
                            const float *inp, const Conv2dSize *s) {
    const int ohow = s->OH * s->OW, ckk = s->C * s->KH * s->KW, OC = s->OC;
    const size_t in_image = (size_t)s->C * s->H * s->W, out_image = (size_t)OC * ohow;
    const int B = chunk_images(s);
    if (dbias) {
        for (int oc = 0; oc < OC; oc++) {
            double acc = 0;
            for (int n = 0; n < s->N; n++) {
                const float *d = dout + (size_t)n * out_image + (size_t)oc * ohow;
                float part = 0;
                for (int p = 0; p < ohow; p++) part += d[p];
                acc += part;
            }
            dbias[oc] += (float)acc;
        }
    }
    if (is_direct(s)) {
        /* dweight (OC, C) += dout_n (OC, HW) @ inp_n^T (HW, C) */
        for (int n = 0; n < s->N; n++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OC, s->C, ohow, 1.0f,
                        dout + (size_t)n * out_image, ohow, inp + (size_t)n * in_image, ohow, 1.0f,
                        dweight, s->C);
        return;
    }
    for (int n0 = 0; n0 < s->N; n0 += B) {
        int b = s->N - n0 < B ? s->N - n0 : B;
        size_t ld = (size_t)B * ohow;
        float *col = workspace;
        for (int i = 0; i < b; i++) im2col(col + (size_t)i * ohow, ld, inp + (size_t)(n0 + i) * in_image, s);
        const float *g = dout + (size_t)n0 * out_image;
        size_t ldg = (size_t)ohow;
        if (B > 1) {
            float *gb = workspace + (size_t)ckk * ld;
            gather_dout(gb, ld, dout, n0, b, s);
            g = gb, ldg = ld;
        }
        /* dweight (OC, CKK) += g (OC, b*ohow) @ col^T (b*ohow, CKK) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OC, ckk, b * ohow, 1.0f, g, (int)ldg, col,
                    (int)ld, 1.0f, dweight, ckk);
    }
}
