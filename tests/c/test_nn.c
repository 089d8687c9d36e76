/* tests/c/test_nn.c: the layers of core/nn against finite differences and direct references.
 *
 * Gradient checks: every forward runs in float on small sizes; the scalar
 *     L(x) = sum_i proj_i * out_i          (proj a fixed random vector, sum in double)
 * is differentiated by central differences, (L(x + h) - L(x - h)) / (x+h - x-h) with the
 * float-rounded step actually taken, and compared with the backward given dout = proj.
 * The error reported is  max_i |fd_i - analytic_i| / max_i |analytic_i|  (relative to the
 * gradient's scale, so it does not blow up on entries that are near zero), with h = 1e-2
 * and tolerance FD_TOL = 2e-3: float rounding in L contributes about 1e-5 and the O(h^2)
 * truncation of smooth ops about 1e-4; a wrong formula gives errors of order 1.
 * Max-pool and ReLU inputs are spaced further apart than h so no step crosses a kink.
 *
 * Forwards are also checked against direct double-precision loops (conv against the
 * definition, batch norm's statistics and running-statistics updates, the split grouping). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "nn/nn.h"
#include "rng.h"
#include "threads.h"

#define FD_H 1e-2f
#define FD_TOL 2e-3

static Rng rng;

static float *randn_buf(long n, float scale) {
    float *p = malloc((size_t)(n ? n : 1) * sizeof *p);
    for (long i = 0; i < n; i++) p[i] = scale * rng_normal(&rng);
    return p;
}
static float *zeros_buf(long n) { return calloc((size_t)(n ? n : 1), sizeof(float)); }
static float *copy_buf(const float *x, long n) {
    float *p = malloc((size_t)(n ? n : 1) * sizeof *p);
    memcpy(p, x, (size_t)n * sizeof *p);
    return p;
}

/* ------------------------------------------------------------ finite differences */

typedef struct Fd {
    void (*forward)(void *ctx); /* recomputes out from the current inputs and parameters */
    void *ctx;
    const float *out;
    long nout;
    const float *proj;
} Fd;

static double projected(const Fd *f) {
    f->forward(f->ctx);
    double L = 0;
    for (long i = 0; i < f->nout; i++) L += (double)f->proj[i] * f->out[i];
    return L;
}

/* Compares grad (n) with central differences of L in x (n); prints and checks. */
static void fd_check(const char *name, const Fd *f, float *x, long n, const float *grad) {
    double scale = 0, maxerr = 0;
    for (long i = 0; i < n; i++) scale = fmax(scale, fabs(grad[i]));
    for (long i = 0; i < n; i++) {
        float x0 = x[i], xp = x0 + FD_H, xm = x0 - FD_H;
        x[i] = xp;
        double lp = projected(f);
        x[i] = xm;
        double lm = projected(f);
        x[i] = x0;
        double fd = (lp - lm) / ((double)xp - (double)xm);
        double err = fabs(fd - grad[i]);
        if (err > maxerr || err != err) maxerr = err;
    }
    f->forward(f->ctx);
    double rel = maxerr / (scale > 1e-6 ? scale : 1e-6);
    printf("  %-48s fd max error %.2e (relative to max |grad| %.3g)\n", name, rel, scale);
    CHECK(name, rel <= FD_TOL, "finite-difference error %.3g > %g", rel, FD_TOL);
}

/* ------------------------------------------------------------ conv2d */

typedef struct ConvCase {
    Conv2dSize s;
    float *inp, *weight, *bias, *out, *ws;
} ConvCase;

static void conv_fwd(void *p) {
    ConvCase *c = p;
    conv2d_forward(c->out, c->ws, c->inp, c->weight, c->bias, &c->s);
}

/* The definition, in double. */
static double conv_reference_max_diff(const ConvCase *c) {
    const Conv2dSize *s = &c->s;
    double m = 0;
    for (int n = 0; n < s->N; n++)
        for (int oc = 0; oc < s->OC; oc++)
            for (int oh = 0; oh < s->OH; oh++)
                for (int ow = 0; ow < s->OW; ow++) {
                    double acc = c->bias ? c->bias[oc] : 0;
                    for (int ci = 0; ci < s->C; ci++)
                        for (int kh = 0; kh < s->KH; kh++)
                            for (int kw = 0; kw < s->KW; kw++) {
                                int ih = oh * s->stride - s->padding + kh, iw = ow * s->stride - s->padding + kw;
                                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                                acc += (double)c->inp[((n * s->C + ci) * s->H + ih) * s->W + iw] *
                                       c->weight[((oc * s->C + ci) * s->KH + kh) * s->KW + kw];
                            }
                    double got = c->out[((n * s->OC + oc) * s->OH + oh) * s->OW + ow];
                    m = fmax(m, fabs(got - acc));
                }
    return m;
}

/* 1 or 0: the next test_conv calls force the vectorised 3x3 kernels on or off (they apply
 * to any 3x3 conv of stride <= 2); -1 keeps conv2d_size_init's choice. */
static int force_3x3 = -1;
/* The same for Winograd F(4x4, 3x3) (3x3 stride-1 padding-1 convs only). */
static int force_winograd = -1;

/* images_per_gemm = 0 keeps conv2d_size_init's choice. */
static void test_conv(int N, int C, int H, int W, int OC, int K, int stride, int padding, int with_bias,
                      int images_per_gemm) {
    ConvCase c;
    char tag[160], name[200];
    int rc = conv2d_size_init(&c.s, N, C, H, W, OC, K, K, stride, padding);
    CHECK("conv2d_size_init", rc == 0, "%s", moco_last_error());
    if (rc) return;
    if (images_per_gemm) c.s.images_per_gemm = images_per_gemm;
    if (force_3x3 >= 0) c.s.use_3x3_kernel = force_3x3;
    if (force_winograd >= 0) c.s.use_winograd = force_winograd;
    snprintf(tag, sizeof tag, "conv2d k%d s%d p%d %s N%d C%d %dx%d OC%d B%d%s", K, stride, padding,
             with_bias ? "bias" : "nobias", N, C, H, W, OC, c.s.images_per_gemm,
             c.s.use_winograd ? " winograd" : c.s.use_3x3_kernel ? " 3x3" : "");
    long nin = (long)N * C * H * W, nw = (long)OC * C * K * K, nout = (long)N * OC * c.s.OH * c.s.OW;
    c.inp = randn_buf(nin, 1);
    c.weight = randn_buf(nw, 0.5f);
    c.bias = with_bias ? randn_buf(OC, 0.5f) : NULL;
    c.out = zeros_buf(nout);
    size_t wsn = conv2d_workspace_size(&c.s);
    /* filled with NaN: a path that reads workspace it did not write would show */
    c.ws = malloc((wsn ? wsn : 1) * sizeof(float));
    for (size_t i = 0; i < wsn; i++) c.ws[i] = NAN;
    float *proj = randn_buf(nout, 1);

    conv_fwd(&c);
    double ref = conv_reference_max_diff(&c);
    /* Winograd rounds to ~1e-5 of the largest output (the transforms' sums), the direct
     * paths to ~1e-7 */
    double out_max = 0;
    for (long i = 0; i < nout; i++) out_max = fmax(out_max, fabs(c.out[i]));
    double tol = c.s.use_winograd ? 1e-5 * fmax(1, out_max) : 1e-4;
    snprintf(name, sizeof name, "%s forward vs direct", tag);
    printf("  %-48s max abs diff %.2e (tol %.1e)\n", name, ref, tol);
    CHECK(name, ref <= tol, "max abs diff %.3g > %.3g", ref, tol);

    Fd f = {conv_fwd, &c, c.out, nout, proj};
    float *dinp = randn_buf(nin, 1); /* garbage: backward_input must overwrite */
    conv2d_backward_input(dinp, c.ws, proj, c.weight, &c.s);
    snprintf(name, sizeof name, "%s grad input", tag);
    fd_check(name, &f, c.inp, nin, dinp);

    /* Parameter gradients accumulate: start from a known non-zero value, subtract it back. */
    float *dw = zeros_buf(nw), *db = with_bias ? zeros_buf(OC) : NULL;
    for (long i = 0; i < nw; i++) dw[i] = 0.25f;
    if (db)
        for (int i = 0; i < OC; i++) db[i] = -0.5f;
    conv2d_backward_params(dw, db, c.ws, proj, c.inp, &c.s);
    for (long i = 0; i < nw; i++) dw[i] -= 0.25f;
    if (db)
        for (int i = 0; i < OC; i++) db[i] += 0.5f;
    snprintf(name, sizeof name, "%s grad weight", tag);
    fd_check(name, &f, c.weight, nw, dw);
    if (db) {
        snprintf(name, sizeof name, "%s grad bias", tag);
        fd_check(name, &f, c.bias, OC, db);
    }
    free(c.inp), free(c.weight), free(c.bias), free(c.out), free(c.ws), free(proj);
    free(dinp), free(dw), free(db);
}

static void test_conv_all(void) {
    /* default chunking (several images per sgemm at these sizes) */
    test_conv(2, 3, 6, 6, 4, 3, 1, 1, 1, 0);
    test_conv(2, 3, 7, 7, 4, 3, 2, 1, 0, 0);
    test_conv(2, 3, 6, 5, 4, 3, 1, 0, 1, 0);
    test_conv(2, 4, 5, 5, 3, 1, 1, 0, 1, 0);
    test_conv(2, 4, 6, 6, 3, 1, 2, 0, 0, 0);
    test_conv(2, 2, 9, 9, 3, 7, 2, 3, 0, 0);
    /* one image per sgemm (direct writes; the 1x1 stride-1 case skips im2col) */
    test_conv(2, 3, 6, 6, 4, 3, 1, 1, 1, 1);
    test_conv(2, 3, 7, 7, 4, 3, 2, 1, 1, 1);
    test_conv(2, 4, 5, 5, 3, 1, 1, 0, 1, 1);
    test_conv(2, 4, 6, 6, 3, 1, 2, 0, 1, 1);
    test_conv(2, 37, 6, 6, 5, 1, 1, 0, 0, 1); /* direct 1x1, C > OC: dweight^T in the workspace */
    test_conv(2, 3, 5, 5, 7, 1, 1, 0, 1, 1);  /* direct 1x1, C < OC: split over OC */
    /* a partial last chunk: 3 images, 2 per sgemm */
    test_conv(3, 2, 5, 5, 3, 3, 1, 1, 1, 2);
    test_conv(3, 4, 4, 4, 3, 1, 1, 0, 0, 2);
    /* a large map (default chunking gives one image per sgemm), forward only + grads sampled */
    {
        Conv2dSize s;
        CHECK("conv2d large map picks one image per gemm",
              conv2d_size_init(&s, 4, 3, 32, 32, 8, 3, 3, 1, 1) == 0 && s.images_per_gemm == 1,
              "images_per_gemm %d", s.images_per_gemm);
        CHECK("conv2d 1x1 large map needs no workspace",
              conv2d_size_init(&s, 4, 3, 32, 32, 8, 1, 1, 1, 0) == 0 && conv2d_workspace_size(&s) == 0,
              "workspace %zu", conv2d_workspace_size(&s));
        CHECK("conv2d 4x4 map batches images",
              conv2d_size_init(&s, 256, 512, 4, 4, 512, 3, 3, 1, 1) == 0 && s.images_per_gemm == 32,
              "images_per_gemm %d", s.images_per_gemm);
        /* 32 images of 7x7: chunks of 11 (the fewest for 512 columns) would leave one of
         * two threads 22 images and the other 10; chunks of 16 give each 16. */
        int threads = threadpool_size();
        moco_set_num_threads(2);
        CHECK("conv2d small maps: chunks balanced over 2 threads",
              conv2d_size_init(&s, 32, 512, 7, 7, 2048, 1, 1, 1, 0) == 0 && s.images_per_gemm == 16,
              "images_per_gemm %d", s.images_per_gemm);
        CHECK("conv2d 14x14 maps: 4 images per chunk on 2 threads, not 3",
              conv2d_size_init(&s, 32, 256, 14, 14, 1024, 1, 1, 1, 0) == 0 && s.images_per_gemm == 4,
              "images_per_gemm %d", s.images_per_gemm);
        moco_set_num_threads(threads);
    }
    Conv2dSize s;
    CHECK("conv2d bad stride is an error", conv2d_size_init(&s, 1, 1, 4, 4, 1, 3, 3, 0, 0) == -1,
          "accepted stride 0");
    CHECK("conv2d kernel larger than input is an error",
          conv2d_size_init(&s, 1, 1, 2, 2, 1, 5, 5, 1, 1) == -1 && strstr(moco_last_error(), "larger"),
          "message: %s", moco_last_error());
}

/* The vectorised 3x3 kernels (conv3x3.c): stride 1 and 2, paddings 0-2, channel counts that
 * are not multiples of the vector width, maps narrower than a vector (whose rows the padding
 * copies as whole vectors), a map smaller than the kernel, and 17 input
 * channels (two blocks of the 16-channel sums); stride 2 takes its input gradient from
 * im2col.  Run last, on a stream of its own, so the other tests keep their data. */
static void test_conv_3x3(void) {
    rng_seed(&rng, 1234, 3);
    force_3x3 = 1;
    test_conv(2, 3, 6, 6, 4, 3, 1, 1, 1, 0);
    test_conv(3, 17, 5, 6, 20, 3, 1, 1, 0, 0);
    test_conv(2, 3, 6, 5, 4, 3, 1, 0, 1, 0);
    test_conv(2, 2, 5, 5, 3, 3, 1, 2, 0, 0);
    test_conv(2, 3, 7, 7, 4, 3, 2, 1, 1, 0);
    test_conv(2, 16, 8, 9, 16, 3, 2, 1, 0, 0);
    test_conv(2, 2, 2, 2, 3, 3, 1, 1, 1, 0);
    test_conv(2, 5, 14, 14, 7, 3, 1, 1, 1, 0); /* rows shorter than a vector: copied whole */
    test_conv(3, 4, 4, 4, 6, 3, 1, 1, 0, 0);
    test_conv(2, 3, 4, 7, 5, 3, 1, 0, 1, 0);
    force_3x3 = 0;
    test_conv(2, 16, 8, 8, 32, 3, 1, 1, 1, 0); /* a shape the kernels take by default, without them */
    force_3x3 = -1;
    Conv2dSize s;
    CHECK("conv2d 16-channel 3x3 takes the vectorised kernels",
          conv2d_size_init(&s, 4, 16, 28, 28, 16, 3, 3, 1, 1) == 0 && s.use_3x3_kernel == 1,
          "use_3x3_kernel %d", s.use_3x3_kernel);
    CHECK("conv2d 3-channel 3x3 stem keeps im2col",
          conv2d_size_init(&s, 4, 3, 32, 32, 64, 3, 3, 1, 1) == 0 && s.use_3x3_kernel == 0,
          "use_3x3_kernel %d", s.use_3x3_kernel);
}

/* Winograd F(4x4, 3x3) (winograd.c): channel counts that are not multiples of the vector
 * width or of the product kernel's tile, maps with partial tiles and with one tile, with
 * and without bias; then the choice conv2d_size_init makes. */
static void test_conv_winograd(void) {
    const char *why;
    int ok = conv2d_winograd_status(&why);
    printf("  winograd: %s\n", why);
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    CHECK("conv2d Winograd start-up check passes", ok, "%s", why);
#else
    /* a build without libmoco's own matrix kernel (make ARCH=-march=x86-64) has no Winograd
     * path: the convolutions keep the exact ones, and the status says why */
    CHECK("conv2d Winograd is off without the own matrix kernel, and says why",
          !ok && strstr(why, "own matrix kernel"), "%s", why);
#endif
    if (!ok) return;
    rng_seed(&rng, 4321, 5);
    force_winograd = 1;
    test_conv(2, 20, 9, 11, 40, 3, 1, 1, 1, 0);
    test_conv(3, 16, 4, 4, 16, 3, 1, 1, 0, 0);
    test_conv(1, 33, 5, 7, 17, 3, 1, 1, 1, 0);
    test_conv(5, 8, 3, 2, 24, 3, 1, 1, 0, 0);
    force_winograd = -1;
    Conv2dSize s;
    CHECK("conv2d 64-channel 32x32 3x3 takes Winograd",
          conv2d_size_init(&s, 8, 64, 32, 32, 64, 3, 3, 1, 1) == 0 && s.use_winograd == 1, "use_winograd %d",
          s.use_winograd);
    CHECK("conv2d 16-channel 28x28 3x3 keeps the direct kernels",
          conv2d_size_init(&s, 8, 16, 28, 28, 16, 3, 3, 1, 1) == 0 && s.use_winograd == 0 && s.use_3x3_kernel == 1,
          "use_winograd %d", s.use_winograd);
    CHECK("conv2d stride-2 3x3 keeps the direct kernels",
          conv2d_size_init(&s, 8, 64, 32, 32, 128, 3, 3, 2, 1) == 0 && s.use_winograd == 0, "use_winograd %d",
          s.use_winograd);
    int previous = conv2d_set_winograd(0);
    CHECK("conv2d_set_winograd(0) keeps new convolutions exact",
          conv2d_size_init(&s, 8, 64, 32, 32, 64, 3, 3, 1, 1) == 0 && s.use_winograd == 0, "use_winograd %d",
          s.use_winograd);
    conv2d_set_winograd(previous);
}

/* ------------------------------------------------------------ batch norm */

typedef struct BnCase {
    BatchNormSize s;
    int training;
    float *inp, *weight, *bias, *out, *mean, *invstd, *rm, *rv;
} BnCase;

static void bn_fwd(void *p) {
    BnCase *c = p;
    if (c->training)
        batchnorm_forward_train(c->out, c->mean, c->invstd, NULL, NULL, c->inp, NULL, c->weight, c->bias,
                                &c->s, 0.1f, 1e-5f);
    else
        batchnorm_forward_eval(c->out, c->mean, c->invstd, c->inp, NULL, c->rm, c->rv, c->weight, c->bias,
                               &c->s, 1e-5f);
}

static void test_batchnorm(const char *label, int N, int C, int HW, int splits, int training) {
    BnCase c;
    char name[200];
    int rc = batchnorm_size_init(&c.s, N, C, HW, splits);
    CHECK("batchnorm_size_init", rc == 0, "%s", moco_last_error());
    if (rc) return;
    c.training = training;
    long n = (long)N * C * HW, S = training ? splits : 1;
    c.inp = randn_buf(n, 1);
    for (long i = 0; i < n; i++) c.inp[i] += 0.5f; /* a non-zero mean */
    c.weight = randn_buf(C, 1);
    c.bias = randn_buf(C, 1);
    c.out = zeros_buf(n);
    c.mean = zeros_buf(S * C);
    c.invstd = zeros_buf(S * C);
    c.rm = randn_buf(C, 0.3f);
    c.rv = randn_buf(C, 0.3f);
    for (int i = 0; i < C; i++) c.rv[i] = 0.5f + fabsf(c.rv[i]);
    float *proj = randn_buf(n, 1);
    bn_fwd(&c);

    if (training) {
        /* statistics of split s: samples s, s+S, ... (the SplitBatchNorm grouping) */
        double maxd = 0;
        for (int sp = 0; sp < splits; sp++)
            for (int ch = 0; ch < C; ch++) {
                double sum = 0, ss = 0, cnt = 0;
                for (int k = sp; k < N; k += splits)
                    for (int i = 0; i < HW; i++) sum += c.inp[((long)k * C + ch) * HW + i], cnt++;
                double mean = sum / cnt;
                for (int k = sp; k < N; k += splits)
                    for (int i = 0; i < HW; i++) {
                        double d = c.inp[((long)k * C + ch) * HW + i] - mean;
                        ss += d * d;
                    }
                maxd = fmax(maxd, fabs(mean - c.mean[sp * C + ch]));
                maxd = fmax(maxd, fabs(1 / sqrt(ss / cnt + 1e-5) - c.invstd[sp * C + ch]) / c.invstd[sp * C + ch]);
            }
        snprintf(name, sizeof name, "%s saved mean/invstd vs direct", label);
        printf("  %-48s max diff %.2e\n", name, maxd);
        CHECK(name, maxd <= 1e-5, "max diff %.3g", maxd);
    }

    Fd f = {bn_fwd, &c, c.out, n, proj};
    float *dinp = randn_buf(n, 1);
    batchnorm_backward_input(dinp, proj, NULL, c.inp, c.mean, c.invstd, c.weight, &c.s, training);
    snprintf(name, sizeof name, "%s grad input", label);
    fd_check(name, &f, c.inp, n, dinp);

    float *dw = zeros_buf(C), *db = zeros_buf(C);
    for (int i = 0; i < C; i++) dw[i] = 1, db[i] = 2;
    batchnorm_backward_params(dw, db, proj, c.inp, c.mean, c.invstd, &c.s, training);
    for (int i = 0; i < C; i++) dw[i] -= 1, db[i] -= 2;
    snprintf(name, sizeof name, "%s grad weight", label);
    fd_check(name, &f, c.weight, C, dw);
    snprintf(name, sizeof name, "%s grad bias", label);
    fd_check(name, &f, c.bias, C, db);

    /* the combined backward gives the same numbers */
    float *dinp2 = zeros_buf(n), *dw2 = zeros_buf(C), *db2 = zeros_buf(C);
    batchnorm_backward(dinp2, dw2, db2, proj, NULL, c.inp, c.mean, c.invstd, c.weight, &c.s, training);
    snprintf(name, sizeof name, "%s combined backward matches", label);
    CHECK(name, check_max_abs_diff(dinp2, dinp, n) == 0 && check_max_abs_diff(dw2, dw, C) <= 1e-6 &&
              check_max_abs_diff(db2, db, C) <= 1e-6,
          "differs by %g / %g / %g", check_max_abs_diff(dinp2, dinp, n), check_max_abs_diff(dw2, dw, C),
          check_max_abs_diff(db2, db, C));
    free(dinp2), free(dw2), free(db2);

    /* dinp may alias dout */
    float *alias = copy_buf(proj, n);
    batchnorm_backward_input(alias, alias, NULL, c.inp, c.mean, c.invstd, c.weight, &c.s, training);
    snprintf(name, sizeof name, "%s backward in place", label);
    CHECK(name, check_max_abs_diff(alias, dinp, n) == 0, "differs by %g", check_max_abs_diff(alias, dinp, n));

    /* The fused ReLU: the forward gives max(0, bn(x)) exactly, in place too; the backward
     * equals the plain backward of dout masked by that output. */
    {
        BnCase r = c;
        float *plain = copy_buf(c.out, n), *inplace = copy_buf(c.inp, n);
        r.out = zeros_buf(n), r.s.relu = 1;
        bn_fwd(&r);
        double worst = 0;
        for (long i = 0; i < n; i++) worst = fmax(worst, fabs(r.out[i] - (plain[i] > 0 ? plain[i] : 0.0f)));
        snprintf(name, sizeof name, "%s fused relu forward", label);
        CHECK(name, worst == 0, "differs from relu(bn(x)) by %g", worst);
        float *again = zeros_buf(n), *again_plain = zeros_buf(n);
        batchnorm_forward_saved(again, c.inp, r.mean, r.invstd, c.weight, c.bias, &r.s);
        batchnorm_forward_saved(again_plain, c.inp, c.mean, c.invstd, c.weight, c.bias, &c.s);
        snprintf(name, sizeof name, "%s output recomputed from the saved statistics", label);
        CHECK(name, check_max_abs_diff(again, r.out, n) == 0 && check_max_abs_diff(again_plain, plain, n) == 0,
              "differs by %g / %g", check_max_abs_diff(again, r.out, n), check_max_abs_diff(again_plain, plain, n));
        free(again), free(again_plain);
        BnCase ip = c;
        ip.inp = inplace, ip.out = inplace;
        bn_fwd(&ip);
        snprintf(name, sizeof name, "%s forward in place", label);
        CHECK(name, check_max_abs_diff(inplace, plain, n) == 0, "differs by %g", check_max_abs_diff(inplace, plain, n));
        float *masked = copy_buf(proj, n), *want = zeros_buf(n), *got = zeros_buf(n), *got2 = zeros_buf(n);
        for (long i = 0; i < n; i++) masked[i] = r.out[i] > 0 ? proj[i] : 0.0f;
        batchnorm_backward_input(want, masked, NULL, c.inp, c.mean, c.invstd, c.weight, &c.s, training);
        batchnorm_backward_input(got, proj, r.out, c.inp, c.mean, c.invstd, c.weight, &r.s, training);
        float *dw1 = zeros_buf(C), *db1 = zeros_buf(C), *dw2r = zeros_buf(C), *db2r = zeros_buf(C);
        batchnorm_backward(want, dw1, db1, masked, NULL, c.inp, c.mean, c.invstd, c.weight, &c.s, training);
        batchnorm_backward(got2, dw2r, db2r, proj, r.out, c.inp, c.mean, c.invstd, c.weight, &r.s, training);
        snprintf(name, sizeof name, "%s fused relu backward", label);
        CHECK(name, check_max_abs_diff(got, want, n) == 0 && check_max_abs_diff(got2, want, n) == 0 &&
                        check_max_abs_diff(dw1, dw2r, C) == 0 && check_max_abs_diff(db1, db2r, C) == 0,
              "differs by %g / %g / %g / %g", check_max_abs_diff(got, want, n), check_max_abs_diff(got2, want, n),
              check_max_abs_diff(dw1, dw2r, C), check_max_abs_diff(db1, db2r, C));
        free(plain), free(inplace), free(r.out), free(masked), free(want), free(got), free(got2);
        free(dw1), free(db1), free(dw2r), free(db2r);
    }

    free(c.inp), free(c.weight), free(c.bias), free(c.out), free(c.mean), free(c.invstd);
    free(c.rm), free(c.rv), free(proj), free(dinp), free(dw), free(db), free(alias);
}

/* Running statistics after one training step, against the formula in double:
 * running = 0.9 * running + 0.1 * mean over splits of (batch mean, unbiased batch var). */
static void test_batchnorm_running(int N, int C, int HW, int splits) {
    BatchNormSize s;
    batchnorm_size_init(&s, N, C, HW, splits);
    long n = (long)N * C * HW;
    float *x = randn_buf(n, 2), *out = zeros_buf(n), *mean = zeros_buf((long)splits * C),
          *invstd = zeros_buf((long)splits * C), *rm = randn_buf(C, 1), *rv = randn_buf(C, 1);
    for (int i = 0; i < C; i++) rv[i] = 1 + fabsf(rv[i]);
    float *rm0 = copy_buf(rm, C), *rv0 = copy_buf(rv, C);
    int rc = batchnorm_forward_train(out, mean, invstd, rm, rv, x, NULL, NULL, NULL, &s, 0.1f, 1e-5f);
    double maxd = 0;
    for (int ch = 0; ch < C; ch++) {
        double msum = 0, vsum = 0;
        for (int sp = 0; sp < splits; sp++) {
            double sum = 0, ss = 0, cnt = 0;
            for (int k = sp; k < N; k += splits)
                for (int i = 0; i < HW; i++) sum += x[((long)k * C + ch) * HW + i], cnt++;
            double m = sum / cnt;
            for (int k = sp; k < N; k += splits)
                for (int i = 0; i < HW; i++) ss += pow(x[((long)k * C + ch) * HW + i] - m, 2);
            msum += m;
            vsum += ss / (cnt - 1);
        }
        double erm = 0.9 * rm0[ch] + 0.1 * msum / splits, erv = 0.9 * rv0[ch] + 0.1 * vsum / splits;
        maxd = fmax(maxd, fmax(fabs(erm - rm[ch]), fabs(erv - rv[ch])));
        if (ch == 0)
            printf("  running stats N%d C%d HW%d S%d channel 0: mean %.6f -> %.6f (expected %.6f), "
                   "var %.6f -> %.6f (expected %.6f)\n", N, C, HW, splits, rm0[0], rm[0], erm, rv0[0],
                   rv[0], erv);
    }
    char name[120];
    snprintf(name, sizeof name, "batchnorm running stats N%d C%d HW%d splits %d", N, C, HW, splits);
    CHECK(name, rc == 0 && maxd <= 1e-5, "rc %d, max diff %.3g", rc, maxd);
    free(x), free(out), free(mean), free(invstd), free(rm), free(rv), free(rm0), free(rv0);
}

static void test_batchnorm_all(void) {
    test_batchnorm("bn2d train S1 N4 C3 HW6", 4, 3, 6, 1, 1);
    test_batchnorm("bn2d train S2 N4 C3 HW6", 4, 3, 6, 2, 1);
    test_batchnorm("bn2d train S3 N6 C2 HW4", 6, 2, 4, 3, 1);
    test_batchnorm("bn1d train S1 N6 C4", 6, 4, 1, 1, 1);
    test_batchnorm("bn1d train S2 N8 C3", 8, 3, 1, 2, 1);
    /* planes of 64+ values take the per-plane loops; more channels than one block */
    test_batchnorm("bn2d train S2 N4 C3 HW72", 4, 3, 72, 2, 1);
    test_batchnorm("bn2d train S1 N2 C70 HW64", 2, 70, 64, 1, 1);
    test_batchnorm("bn2d train S2 N4 C90 HW3", 4, 90, 3, 2, 1);
    test_batchnorm("bn1d train S2 N8 C300", 8, 300, 1, 2, 1);
    test_batchnorm("bn2d eval N2 C3 HW80", 2, 3, 80, 1, 0);
    test_batchnorm("bn2d eval N3 C3 HW5", 3, 3, 5, 1, 0);
    test_batchnorm("bn1d eval N5 C4", 5, 4, 1, 1, 0);
    test_batchnorm_running(4, 3, 6, 1);
    test_batchnorm_running(8, 3, 5, 2);
    test_batchnorm_running(16, 2, 1, 4);
    test_batchnorm_running(4, 70, 65, 2);
    test_batchnorm_running(6, 300, 1, 3);

    BatchNormSize s;
    CHECK("batchnorm splits must divide N",
          batchnorm_size_init(&s, 6, 3, 4, 4) == -1 && strstr(moco_last_error(), "not divisible"),
          "message: %s", moco_last_error());
    batchnorm_size_init(&s, 2, 1, 1, 2);
    float x[2] = {1, 2}, y[2], m[2], v[2];
    CHECK("batchnorm one value per group is an error",
          batchnorm_forward_train(y, m, v, NULL, NULL, x, NULL, NULL, NULL, &s, 0.1f, 1e-5f) == -1 &&
              strstr(moco_last_error(), "more than 1 value"),
          "message: %s", moco_last_error());
}

/* ------------------------------------------------------------ relu, pools */

typedef struct SimpleCase {
    float *inp, *out, *aux;
    int32_t *idx;
    MaxPool2dSize mp;
    int N, C, HW, D;
} SimpleCase;

static void relu_fwd(void *p) {
    SimpleCase *c = p;
    relu_forward(c->out, c->inp, (size_t)c->N);
}

static void test_relu(void) {
    SimpleCase c = {0};
    c.N = 40;
    c.inp = randn_buf(c.N, 1);
    for (int i = 0; i < c.N; i++) c.inp[i] += c.inp[i] > 0 ? 0.05f : -0.05f; /* away from the kink */
    c.out = zeros_buf(c.N);
    float *proj = randn_buf(c.N, 1), *dinp = zeros_buf(c.N);
    relu_fwd(&c);
    relu_backward_input(dinp, proj, c.out, (size_t)c.N);
    Fd f = {relu_fwd, &c, c.out, c.N, proj};
    fd_check("relu grad input", &f, c.inp, c.N, dinp);
    float *inplace = copy_buf(c.inp, c.N);
    relu_forward(inplace, inplace, (size_t)c.N);
    CHECK("relu in place", check_max_abs_diff(inplace, c.out, c.N) == 0, "differs");
    free(c.inp), free(c.out), free(proj), free(dinp), free(inplace);
}

static void maxpool_fwd(void *p) {
    SimpleCase *c = p;
    maxpool2d_forward(c->out, c->idx, c->inp, &c->mp);
}

static void test_maxpool(int N, int C, int H, int W, int k, int st, int pad) {
    SimpleCase c = {0};
    char name[160];
    if (maxpool2d_size_init(&c.mp, N, C, H, W, k, st, pad)) {
        CHECK("maxpool2d_size_init", 0, "%s", moco_last_error());
        return;
    }
    long nin = (long)N * C * H * W, nout = (long)N * C * c.mp.OH * c.mp.OW;
    /* distinct values 0.05 apart (a random order), so a step of h = 0.01 never changes an argmax */
    int64_t *perm = malloc((size_t)nin * sizeof *perm);
    rng_permutation(&rng, perm, nin);
    c.inp = malloc((size_t)nin * sizeof(float));
    for (long i = 0; i < nin; i++) c.inp[i] = 0.05f * (float)perm[i] - 0.025f * (float)nin;
    c.out = zeros_buf(nout);
    c.idx = malloc((size_t)nout * sizeof *c.idx);
    float *proj = randn_buf(nout, 1), *dinp = randn_buf(nin, 1);
    maxpool_fwd(&c);
    maxpool2d_backward_input(dinp, proj, c.idx, &c.mp);
    Fd f = {maxpool_fwd, &c, c.out, nout, proj};
    snprintf(name, sizeof name, "maxpool2d k%d s%d p%d %dx%d grad input", k, st, pad, H, W);
    fd_check(name, &f, c.inp, nin, dinp);
    free(perm), free(c.inp), free(c.out), free(c.idx), free(proj), free(dinp);
}

static void test_maxpool_semantics(void) {
    MaxPool2dSize s;
    /* 1 plane 4x4, all values equal to -3: padding must not win (it is -inf, not 0), ties keep
     * the first in-bounds position in scan order. */
    maxpool2d_size_init(&s, 1, 1, 4, 4, 3, 2, 1);
    float x[16], y[4];
    int32_t idx[4];
    for (int i = 0; i < 16; i++) x[i] = -3;
    maxpool2d_forward(y, idx, x, &s);
    CHECK("maxpool2d padding acts as -inf", y[0] == -3 && y[3] == -3, "got %g %g", y[0], y[3]);
    /* windows: rows/cols [-1,1] -> first (0,0); [1,3] -> first (1,1) */
    CHECK("maxpool2d ties pick the first maximum", idx[0] == 0 && idx[1] == 1 && idx[2] == 4 && idx[3] == 5,
          "indices %d %d %d %d", idx[0], idx[1], idx[2], idx[3]);
    x[5] = NAN;
    maxpool2d_forward(y, idx, x, &s);
    CHECK("maxpool2d NaN propagates", isnan(y[0]) && idx[0] == 5, "got %g at %d", y[0], idx[0]);
    CHECK("maxpool2d padding > kernel/2 is an error", maxpool2d_size_init(&s, 1, 1, 4, 4, 3, 2, 2) == -1,
          "accepted");
    /* overlapping windows add their gradients at a shared maximum */
    /* 3x3 stride-1 pad-1 windows: the maximum at (2,2) is in the 9 windows centred on rows and
     * columns 1..3 */
    for (int i = 0; i < 16; i++) x[i] = 0;
    x[10] = 5;
    maxpool2d_size_init(&s, 1, 1, 4, 4, 3, 1, 1);
    float y16[16], dy[16], dx[16];
    int32_t i16[16];
    maxpool2d_forward(y16, i16, x, &s);
    for (int i = 0; i < 16; i++) dy[i] = 1;
    maxpool2d_backward_input(dx, dy, i16, &s);
    CHECK("maxpool2d overlapping windows accumulate", dx[10] == 9, "dx at the maximum is %g, expected 9", dx[10]);
}

/* Maps wide enough for the 16-output stride-2 vector path, with ties (values on a coarse
 * grid) and NaNs, against PyTorch's rule written out plainly. */
static void test_maxpool_vector(void) {
    static const int cases[][5] = {{70, 67, 3, 2, 1}, {64, 64, 3, 2, 1}, {40, 81, 2, 2, 0}, {37, 50, 3, 2, 0}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int H = cases[ci][0], W = cases[ci][1], k = cases[ci][2], st = cases[ci][3], pad = cases[ci][4];
        MaxPool2dSize s;
        maxpool2d_size_init(&s, 2, 3, H, W, k, st, pad);
        long nin = 6L * H * W, nout = 6L * s.OH * s.OW;
        float *x = randn_buf(nin, 1), *y = zeros_buf(nout);
        int32_t *idx = malloc((size_t)nout * sizeof *idx);
        for (long i = 0; i < nin; i++) x[i] = roundf(x[i] * 2) / 2; /* many ties */
        for (long i = 0; i < nin; i += 97) x[i] = NAN;
        maxpool2d_forward(y, idx, x, &s);
        long bad = 0;
        for (int pl = 0; pl < 6; pl++)
            for (int oh = 0; oh < s.OH; oh++)
                for (int ow = 0; ow < s.OW; ow++) {
                    const float *p = x + (long)pl * H * W;
                    int h0 = oh * st - pad, w0 = ow * st - pad, best = -1;
                    float m = -INFINITY;
                    for (int h = h0 < 0 ? 0 : h0; h < h0 + k && h < H; h++)
                        for (int w = w0 < 0 ? 0 : w0; w < w0 + k && w < W; w++) {
                            if (best < 0) best = h * W + w;
                            if (p[h * W + w] > m || isnan(p[h * W + w])) m = p[h * W + w], best = h * W + w;
                        }
                    long o = ((long)pl * s.OH + oh) * s.OW + ow;
                    int same = idx[o] == best && (m == y[o] || (isnan(m) && isnan(y[o])));
                    bad += !same;
                }
        char name[120];
        snprintf(name, sizeof name, "maxpool2d k%d s%d p%d %dx%d with ties and NaN (vector path)", k, st, pad, H, W);
        CHECK(name, bad == 0, "%ld of %ld outputs differ from the rule", bad, nout);
        free(x), free(y), free(idx);
    }
}

static void avgpool_fwd(void *p) {
    SimpleCase *c = p;
    avgpool_global_forward(c->out, c->inp, c->N, c->C, c->HW);
}

static void test_avgpool(void) {
    SimpleCase c = {0};
    c.N = 2, c.C = 3, c.HW = 7;
    long nin = (long)c.N * c.C * c.HW, nout = (long)c.N * c.C;
    c.inp = randn_buf(nin, 1);
    c.out = zeros_buf(nout);
    float *proj = randn_buf(nout, 1), *dinp = randn_buf(nin, 1);
    avgpool_fwd(&c);
    double want = 0;
    for (int i = 0; i < c.HW; i++) want += c.inp[c.HW + i];
    CHECK_NEAR("avgpool forward value", c.out[1], want / c.HW, 1e-6);
    avgpool_global_backward_input(dinp, proj, c.N, c.C, c.HW);
    Fd f = {avgpool_fwd, &c, c.out, nout, proj};
    fd_check("avgpool global grad input", &f, c.inp, nin, dinp);
    free(c.inp), free(c.out), free(proj), free(dinp);
}

/* ------------------------------------------------------------ linear */

typedef struct LinCase {
    int N, IN, OUT;
    float *inp, *weight, *bias, *out;
} LinCase;

static void linear_fwd(void *p) {
    LinCase *c = p;
    linear_forward(c->out, c->inp, c->weight, c->bias, c->N, c->IN, c->OUT);
}

static void test_linear(int with_bias) {
    LinCase c = {3, 5, 4, NULL, NULL, NULL, NULL};
    long nin = (long)c.N * c.IN, nw = (long)c.OUT * c.IN, nout = (long)c.N * c.OUT;
    c.inp = randn_buf(nin, 1);
    c.weight = randn_buf(nw, 1);
    c.bias = with_bias ? randn_buf(c.OUT, 1) : NULL;
    c.out = zeros_buf(nout);
    float *proj = randn_buf(nout, 1), *dinp = randn_buf(nin, 1), *dw = zeros_buf(nw),
          *db = with_bias ? zeros_buf(c.OUT) : NULL;
    linear_fwd(&c);
    double want = c.bias ? c.bias[2] : 0;
    for (int i = 0; i < c.IN; i++) want += (double)c.inp[c.IN + i] * c.weight[2 * c.IN + i];
    CHECK_NEAR(with_bias ? "linear forward value (bias)" : "linear forward value", c.out[c.OUT + 2], want, 1e-5);
    linear_backward_input(dinp, proj, c.weight, c.N, c.IN, c.OUT);
    for (long i = 0; i < nw; i++) dw[i] = 3;
    linear_backward_params(dw, db, proj, c.inp, c.N, c.IN, c.OUT);
    for (long i = 0; i < nw; i++) dw[i] -= 3;
    Fd f = {linear_fwd, &c, c.out, nout, proj};
    fd_check(with_bias ? "linear (bias) grad input" : "linear grad input", &f, c.inp, nin, dinp);
    fd_check(with_bias ? "linear (bias) grad weight" : "linear grad weight", &f, c.weight, nw, dw);
    if (db) fd_check("linear grad bias", &f, c.bias, c.OUT, db);
    free(c.inp), free(c.weight), free(c.bias), free(c.out), free(proj), free(dinp), free(dw), free(db);
}

/* ------------------------------------------------------------ normalize, cross-entropy */

static void normalize_fwd(void *p) {
    SimpleCase *c = p;
    normalize_forward(c->out, c->aux, c->inp, c->N, c->D, 1e-12f);
}

static void test_normalize(void) {
    SimpleCase c = {0};
    c.N = 4, c.D = 6;
    long n = (long)c.N * c.D;
    c.inp = randn_buf(n, 1);
    c.out = zeros_buf(n);
    c.aux = zeros_buf(c.N);
    float *proj = randn_buf(n, 1), *dinp = randn_buf(n, 1);
    normalize_fwd(&c);
    double ss = 0;
    for (int j = 0; j < c.D; j++) ss += (double)c.out[c.D + j] * c.out[c.D + j];
    CHECK_NEAR("normalize rows have unit norm", ss, 1.0, 1e-6);
    normalize_backward_input(dinp, proj, c.out, c.aux, c.N, c.D, 1e-12f);
    Fd f = {normalize_fwd, &c, c.out, n, proj};
    fd_check("normalize grad input", &f, c.inp, n, dinp);
    /* a zero row: output zero, gradient dout / eps (the clamp), as PyTorch */
    float z[3] = {0, 0, 0}, zo[3], zn, dz[3], g[3] = {1e-12f, -2e-12f, 0};
    normalize_forward(zo, &zn, z, 1, 3, 1e-12f);
    normalize_backward_input(dz, g, zo, &zn, 1, 3, 1e-12f);
    CHECK("normalize zero row", zo[0] == 0 && zn == 0 && fabsf(dz[0] - 1) < 1e-6f && fabsf(dz[1] + 2) < 1e-6f,
          "out %g, norm %g, grad %g %g", zo[0], zn, dz[0], dz[1]);
    free(c.inp), free(c.out), free(c.aux), free(proj), free(dinp);
}

typedef struct CeCase {
    int N, K;
    float *logits, loss;
    int64_t *labels;
} CeCase;

static void ce_fwd(void *p) {
    CeCase *c = p;
    cross_entropy_forward_backward(&c->loss, NULL, c->logits, c->labels, c->N, c->K);
}

static void test_cross_entropy(void) {
    CeCase c = {5, 7, NULL, 0, NULL};
    long n = (long)c.N * c.K;
    c.logits = randn_buf(n, 2);
    int64_t labels[5] = {0, 3, 6, 0, 2};
    c.labels = labels;
    float *dlogits = zeros_buf(n), one = 1;
    int rc = cross_entropy_forward_backward(&c.loss, dlogits, c.logits, c.labels, c.N, c.K);
    double want = 0;
    for (int r = 0; r < c.N; r++) {
        double s = 0;
        for (int j = 0; j < c.K; j++) s += exp(c.logits[r * c.K + j]);
        want += log(s) - c.logits[r * c.K + labels[r]];
    }
    CHECK("cross_entropy returns 0", rc == 0, "%s", moco_last_error());
    CHECK_NEAR("cross_entropy loss value", c.loss, want / c.N, 1e-5);
    Fd f = {ce_fwd, &c, &c.loss, 1, &one};
    fd_check("cross_entropy grad logits", &f, c.logits, n, dlogits);
    /* in place */
    float *inplace = copy_buf(c.logits, n), loss2;
    cross_entropy_forward_backward(&loss2, inplace, inplace, c.labels, c.N, c.K);
    CHECK("cross_entropy in place", loss2 == c.loss && check_max_abs_diff(inplace, dlogits, n) == 0, "differs");
    /* huge logits stay finite (log-sum-exp) */
    float big[3] = {1000, -1000, 999}, dbig[3], lbig;
    int64_t lab = 2;
    cross_entropy_forward_backward(&lbig, dbig, big, &lab, 1, 3);
    CHECK_NEAR("cross_entropy stable for logits of 1000", lbig, 1.0 + log1p(exp(-1.0)), 1e-5);
    lab = 3;
    CHECK("cross_entropy label out of range is an error",
          cross_entropy_forward_backward(&lbig, dbig, big, &lab, 1, 3) == -1 &&
              strstr(moco_last_error(), "labels[1] is 3"),
          "message: %s", moco_last_error());
    free(c.logits), free(dlogits), free(inplace);
}

int main(void) {
    rng_seed(&rng, 1234, 0);
    test_conv_all();
    test_batchnorm_all();
    test_relu();
    test_maxpool(2, 2, 7, 7, 3, 2, 1);
    test_maxpool(1, 2, 6, 5, 2, 2, 0);
    test_maxpool(1, 1, 5, 5, 3, 1, 1);
    test_maxpool_semantics();
    test_maxpool_vector();
    test_avgpool();
    test_linear(1);
    test_linear(0);
    test_normalize();
    test_cross_entropy();
    test_conv_3x3();
    test_conv_winograd();
    CHECK_DONE();
}
