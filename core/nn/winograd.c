/* core/nn/winograd.c: 3x3 stride-1 padding-1 convolutions (forward, input gradient and
 * weight gradient) by Winograd's minimal filtering F(4x4, 3x3) (Lavin and Gray, 2016).
 *
 * Why: a 3x3 convolution spends 9 multiply-adds per output and input channel; F(4x4, 3x3)
 * computes a 4x4 tile of outputs from a 6x6 tile of inputs with 36 instead of 144, so the
 * products, which are most of a ResNet's arithmetic, shrink 4x.  The price is three cheap
 * transforms and a different rounding (see docs/performance.md for the error against
 * PyTorch: about 1e-6 of the largest output, against 1e-7 for the direct kernels).
 *
 * The algebra.  For a 6x6 input tile d and a 3x3 kernel g, the 4x4 outputs are
 *     Y = A^T [ (G g G^T) (.) (B^T d B) ] A          ((.) elementwise)
 * with the matrices of the interpolation points 0, +-1, +-2 (the B^T, G, A^T of the paper;
 * written out in bt6, g3 and at6 below).  Summed over input channels, the elementwise
 * product at each of the 36 positions p is a matrix product:
 *     M_p (tiles, OC) = V_p (tiles, C) @ U_p (C, OC),  V_p = (B^T d B)_p, U_p = (G g G^T)_p.
 * The input gradient is the same convolution of dout with the kernels flipped and their
 * channel roles swapped.  The weight gradient follows from U being linear in g:
 *     dg = G^T [ sum over tiles of (A dY A^T) (.) (B^T d B) ] G,
 * i.e. 36 products dU_p (C, OC) = V_p^T (C, tiles) @ Z_p (tiles, OC), Z_p = (A dY A^T)_p.
 *
 * Layouts.  Transforms run on vectors of 16 channels (nn/vec.h), so every lane does useful
 * work whatever the map size (a 4x4 map is one tile), and no transform needs a shuffle:
 *   - ib: the 6 input rows of one tile row, channels last: [channel block][row][column][16],
 *     made from NCHW with 16x16 transposes, with the zero border (column 0 and columns past
 *     W, rows outside the map) written explicitly;
 *   - V_p: (tiles, C) row-major, one row per tile, read in place by the product kernel
 *     (core/gemm.h, moco_gemm_packed, MOCO_GEMM_A_ROWS);
 *   - U_p: the kernel's packed panels, computed once per call (the weights change every step);
 *   - M_p: (tiles, OC) row-major, the product's output; the output transform writes the
 *     output rows channels-last into ob and a transpose puts them back in NCHW;
 *   - for the weight gradient, Z_p is written straight into packed panels and V_p is read as
 *     A^T (MOCO_GEMM_A_COLUMNS).
 * Row strides of V and M are padded by 16 floats: with a power-of-two stride (512 channels)
 * the 12 rows the kernel reads at once fall into the same few L1 sets.
 *
 * Work.  The tile rows of the whole batch (N * ceil(H/4) of them) are cut into blocks of a
 * few tile rows, sized so that a block's V and M stay in L2; a block is one task.  The
 * forward and the input gradient write each output tile from exactly one task.  The weight
 * gradient goes block by block: the tile rows of a block transform in parallel into shared
 * V and Z, then the 36 products are split by position, each dU_p added to by one task in
 * block order, so the result depends neither on timing nor on the thread count. */
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "gemm.h"
#include "nn/vec.h"
#include "nn/winograd.h"
#include "threads.h"

#define VW VEC_WIDTH /* channels per vector */
#define NPOS 36      /* transform positions: 6 x 6 */

static long round_up(long x, long m) { return (x + m - 1) / m * m; }
static long max_l(long a, long b) { return a > b ? a : b; }
static long min_l(long a, long b) { return a < b ? a : b; }

/* ------------------------------------------------------------ the transforms (one vector =
 * 16 channels); each is applied along columns, then along rows */

/* o = B^T d for d of 6: the input transform */
static inline void bt6(const vecf *d, vecf *o) {
    o[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
    o[1] = -4.0f * (d[1] + d[2]) + d[3] + d[4];
    o[2] = 4.0f * (d[1] - d[2]) - d[3] + d[4];
    o[3] = 2.0f * (d[3] - d[1]) - d[2] + d[4];
    o[4] = 2.0f * (d[1] - d[3]) - d[2] + d[4];
    o[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
}

/* o = A^T m for m of 6: the output transform (6 -> 4) */
static inline void at6(const vecf *m, vecf *o) {
    vecf a = m[1] + m[2], b = m[1] - m[2], c = m[3] + m[4], d = m[3] - m[4];
    o[0] = m[0] + a + c;
    o[1] = b + 2.0f * d;
    o[2] = a + 4.0f * c;
    o[3] = b + 8.0f * d + m[5];
}

/* o = A e for e of 4: the output-gradient transform of the weight gradient (4 -> 6) */
static inline void a4(const vecf *e, vecf *o) {
    vecf s02 = e[0] + e[2], s13 = e[1] + e[3], t02 = e[0] + 4.0f * e[2], t13 = 2.0f * e[1] + 8.0f * e[3];
    o[0] = e[0];
    o[1] = s02 + s13;
    o[2] = s02 - s13;
    o[3] = t02 + t13;
    o[4] = t02 - t13;
    o[5] = e[3];
}

/* u = G g for g of 3: the kernel transform (3 -> 6); lanes are 16 kernels */
static inline void g3(const vecf *g, int stride, vecf *u, int ustride) {
    vecf g0 = g[0], g1 = g[stride], g2 = g[2 * stride];
    u[0] = 0.25f * g0;
    u[ustride] = (g0 + g1 + g2) * (-1.0f / 6.0f);
    u[2 * ustride] = (g0 - g1 + g2) * (-1.0f / 6.0f);
    u[3 * ustride] = g0 * (1.0f / 24.0f) + g1 * (1.0f / 12.0f) + g2 * (1.0f / 6.0f);
    u[4 * ustride] = g0 * (1.0f / 24.0f) - g1 * (1.0f / 12.0f) + g2 * (1.0f / 6.0f);
    u[5 * ustride] = g2;
}

/* w = G^T u for u of 6: back from the transform domain (6 -> 3) */
static inline void gt6(const vecf *u, int stride, vecf *w, int wstride) {
    vecf u0 = u[0], u1 = u[stride], u2 = u[2 * stride], u3 = u[3 * stride], u4 = u[4 * stride], u5 = u[5 * stride];
    w[0] = u0 * 0.25f - (u1 + u2) * (1.0f / 6.0f) + (u3 + u4) * (1.0f / 24.0f);
    w[wstride] = (u2 - u1) * (1.0f / 6.0f) + (u3 - u4) * (1.0f / 12.0f);
    w[2 * wstride] = (u3 + u4 - u1 - u2) * (1.0f / 6.0f) + u5;
}

/* ------------------------------------------------------------ the plan of one pass */

typedef struct Plan {
    int N, H, W, th, tw;
    int cin, cout;       /* channels into and out of the pass */
    int cinp, coutp;     /* cin rounded up to the vector, cout to the kernel's NR */
    int cinm;            /* cinp rounded up to MR: the rows of dU */
    int mr, nr;
    int pad_v;           /* V rows carry a zero vector after cinp (the weight gradient's) */
    int rows_per_block;  /* tile rows per block */
    int blocks, tb, tbp; /* blocks; tiles per full block, rounded up to MR */
    long ldv, ldm;       /* row strides of V and M */
    int wib, wob;        /* columns of ib (with the zero border) and of ob */
    size_t ib_floats, v_floats, m_floats, ob_floats, thread_floats, shared_floats;
    size_t du_floats;    /* the weight gradient's dU */
    int private_du;      /* ... one per task (see make_plan) */
    int tasks;           /* ... and the number of tasks then */
} Plan;

enum { PASS_FORWARD, PASS_INPUT_GRAD, PASS_WEIGHT_GRAD };

static int make_plan(Plan *p, const Conv2dSize *s, int pass) {
    int mr, nr, nr_narrow;
    if (moco_gemm_tile(&mr, &nr, &nr_narrow)) return -1;
    memset(p, 0, sizeof *p);
    p->N = s->N, p->H = s->H, p->W = s->W;
    p->th = (s->H + 3) / 4, p->tw = (s->W + 3) / 4;
    p->cin = pass == PASS_INPUT_GRAD ? s->OC : s->C;
    p->cout = pass == PASS_INPUT_GRAD ? s->C : s->OC;
    p->mr = mr;
    /* products with 16 columns take the narrow tile (the wide one would double the work) */
    p->nr = round_up(p->cout, VW) <= nr_narrow ? nr_narrow : nr;
    p->cinp = (int)round_up(p->cin, VW);
    p->coutp = (int)round_up(p->cout, p->nr > VW ? p->nr : VW);
    p->cinm = (int)round_up(p->cinp, mr);
    /* Row strides: as narrow as the products read (the weight gradient's A^T reads cinm
     * columns), plus a vector when a multiple of 256 floats (rows the kernel reads together
     * would share L1 sets) */
    p->ldv = pass == PASS_WEIGHT_GRAD ? max_l(p->cinp, p->cinm) : p->cinp;
    if (p->ldv % 256 == 0) p->ldv += VW;
    if (pass == PASS_WEIGHT_GRAD && p->ldv < p->cinp + VW) p->ldv = round_up(p->cinp + VW, VW);
    p->ldm = p->coutp % 256 == 0 ? p->coutp + VW : p->coutp;
    p->pad_v = pass == PASS_WEIGHT_GRAD && p->cinm > p->cinp;
    long per_tile = (long)NPOS * (p->ldv + p->ldm);
    long tile_rows = (long)p->N * p->th;
    int threads = s->threads < 1 ? 1 : s->threads;
    long target;
    if (pass != PASS_WEIGHT_GRAD) {
        /* Tiles per block (one task each).  A block reads all of U (36 cinp x coutp floats)
         * once, and writes and reads its V and M; so that U's share stays below theirs, a
         * block holds at least about 2 cinp coutp / (cinp + coutp) tiles (512 for 512
         * channels), and at least 48 (rows for the product kernel).  With few channels, at
         * most what keeps V and M in about 2 MiB of L2; never more than an even share of the
         * batch's tiles per thread. */
        long amortise = 2L * p->cinp * p->coutp / (p->cinp + p->coutp);
        target = max_l(48, max_l(amortise, min_l(256, (1L << 19) / per_tile)));
        if (target > 512) target = 512;
        long share = (tile_rows + threads - 1) / threads * p->tw; /* tiles per thread */
        if (target > share) target = share;
    } else {
        /* Two ways, by the size of dU (36 cinm x coutp floats).  When every task can keep its
         * own dU in 8 MiB (up to 128 channels), each task transforms and multiplies a range
         * of blocks on its own thread (blocks sized as the forward's) and the dUs are added
         * in task order.  Otherwise the blocks go one by one through the whole pool: their
         * tile rows transform in parallel into a shared V and Z, then the 36 products split
         * by position add into one shared dU.  A block's tiles are then the inner dimension
         * of products that read and write dU once per block: 64 to 256 tiles, V and Z in
         * about 16 MiB (112 tiles for 512 channels). */
        p->du_floats = round_up((long)NPOS * p->cinm * p->coutp, 16);
        p->private_du = (long)threads * p->du_floats <= (2L << 20);
        if (p->private_du) {
            long share = (tile_rows + threads - 1) / threads * p->tw;
            target = min_l(share, min_l(256, max_l(48, (1L << 19) / per_tile)));
        } else {
            target = min_l(256, max_l(64, (1L << 22) / per_tile));
        }
    }
    p->rows_per_block = (int)max_l(1, target / p->tw);
    if (p->rows_per_block > tile_rows) p->rows_per_block = (int)tile_rows;
    p->blocks = (int)((tile_rows + p->rows_per_block - 1) / p->rows_per_block);
    p->tb = p->rows_per_block * p->tw;
    p->tbp = (int)round_up(p->tb, mr);
    p->wib = 4 * p->tw + 2, p->wob = 4 * p->tw;
    p->ib_floats = (size_t)p->cinp * 6 * p->wib;
    p->v_floats = (size_t)NPOS * p->tbp * p->ldv;
    p->m_floats = pass == PASS_WEIGHT_GRAD ? (size_t)NPOS * moco_gemm_packed_b_floats(p->tb, p->coutp, p->nr)
                                           : (size_t)NPOS * p->tbp * p->ldm;
    p->ob_floats = (size_t)p->coutp * 4 * p->wob;
    if (pass != PASS_WEIGHT_GRAD) {
        /* per thread: ib, V, M, ob; shared: U */
        p->thread_floats = round_up((long)(p->ib_floats + p->v_floats + p->m_floats + p->ob_floats), 16);
        p->shared_floats = (size_t)NPOS * moco_gemm_packed_b_floats(p->cinp, p->coutp, p->nr);
    } else if (p->private_du) {
        /* per thread: ib, ob, V, Z; shared: a dU per task */
        p->thread_floats = round_up((long)(p->ib_floats + p->ob_floats + p->v_floats + p->m_floats), 16);
        p->tasks = (int)min_l(threads, p->blocks);
        p->shared_floats = (size_t)p->tasks * p->du_floats;
    } else {
        /* per thread: ib, ob; shared: dU, then the block's V and Z */
        p->thread_floats = round_up((long)(p->ib_floats + p->ob_floats), 16);
        p->shared_floats = p->du_floats + p->v_floats + p->m_floats;
    }
    p->shared_floats = round_up((long)p->shared_floats, 16);
    return 0;
}

static size_t plan_floats(const Plan *p, int threads) { return p->shared_floats + (size_t)threads * p->thread_floats; }

int winograd_applies(const Conv2dSize *s) {
    int mr, nr;
    return s->KH == 3 && s->KW == 3 && s->stride == 1 && s->padding == 1 && s->OH == s->H && s->OW == s->W &&
           moco_gemm_tile(&mr, &nr, NULL) == 0;
}

size_t winograd_workspace_size(const Conv2dSize *s) {
    Plan p;
    size_t best = 0;
    int threads = s->threads < 1 ? 1 : s->threads;
    for (int pass = PASS_FORWARD; pass <= PASS_WEIGHT_GRAD; pass++) {
        if (make_plan(&p, s, pass)) return 0;
        size_t f = plan_floats(&p, threads);
        if (f > best) best = f;
    }
    return best;
}

/* ------------------------------------------------------------ rows in and out of NCHW */

/* dst [cb][i][column][16] for i < nrows, from rows row0 .. row0+nrows-1 of img (cin, H, W),
 * the image's column w landing at column w + col_off; everything else zero.
 * A row piece shorter than a vector (a 14- or 7-px row, or the last 12 px of 28) is read as
 * a whole vector while the image has that many floats left: the floats past the row only
 * reach the transposed columns past n, which are not stored.  Copying the piece into a
 * zeroed buffer first cost a failed store-to-load forward per load, a fifth of a 14x14
 * layer's time. */
static void load_rows(float *dst, int width, const float *img, int cin, int cinp, int H, int W, int row0, int nrows,
                      int col_off) {
    const size_t plane = (size_t)H * W;
    const float *img_end = img + (size_t)cin * plane;
    for (int cb = 0; cb < cinp / VW; cb++) {
        for (int i = 0; i < nrows; i++) {
            float *drow = dst + ((size_t)cb * nrows + i) * width * VW;
            int ih = row0 + i;
            if (ih < 0 || ih >= H) {
                memset(drow, 0, (size_t)width * VW * sizeof *drow);
                continue;
            }
            memset(drow, 0, (size_t)col_off * VW * sizeof *drow);
            memset(drow + (size_t)(col_off + W) * VW, 0, (size_t)(width - col_off - W) * VW * sizeof *drow);
            for (int w0 = 0; w0 < W; w0 += VW) {
                int n = W - w0 < VW ? W - w0 : VW;
                vecf r[VW];
                for (int c = 0; c < VW; c++) {
                    int ch = cb * VW + c;
                    if (ch >= cin) {
                        r[c] = (vecf){0};
                        continue;
                    }
                    const float *src = img + (size_t)ch * plane + (size_t)ih * W + w0;
                    if (n == VW || src + VW <= img_end) {
                        r[c] = vec_load(src);
                    } else {
                        float t[VW] = {0};
                        memcpy(t, src, (size_t)n * sizeof *t);
                        r[c] = vec_load(t);
                    }
                }
                vec_transpose16(r);
                for (int j = 0; j < n; j++) vec_store(drow + (size_t)(col_off + w0 + j) * VW, r[j]);
            }
        }
    }
}

/* Rows row0 .. row0+3 (those < H) of out (cout, H, W) <- ob [ocb][r][column][16] (+ bias). */
static void store_rows(float *out, const float *ob, int width, int cout, int H, int W, int row0, const float *bias) {
    const size_t plane = (size_t)H * W;
    for (int ocb = 0; ocb * VW < cout; ocb++) {
        for (int r = 0; r < 4 && row0 + r < H; r++) {
            const float *src = ob + ((size_t)ocb * 4 + r) * width * VW;
            for (int w0 = 0; w0 < W; w0 += VW) {
                int n = W - w0 < VW ? W - w0 : VW;
                vecf v[VW];
                for (int j = 0; j < VW; j++) v[j] = j < n ? vec_load(src + (size_t)(w0 + j) * VW) : (vecf){0};
                vec_transpose16(v);
                for (int c = 0; c < VW && ocb * VW + c < cout; c++) {
                    int ch = ocb * VW + c;
                    vecf x = bias ? v[c] + bias[ch] : v[c];
                    float *dst = out + (size_t)ch * plane + (size_t)(row0 + r) * W + w0;
                    if (n == VW) {
                        vec_store(dst, x);
                    } else {
                        float t[VW];
                        vec_store(t, x);
                        memcpy(dst, t, (size_t)n * sizeof *t);
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------ tile transforms */

/* V rows t of the 36 matrices (stride tbp * ldv apart) <- B^T d B of tile column tx of ib. */
static void input_tile(float *V, long vstride, long ldv, int t, const float *ib, const Plan *p, int tx) {
    for (int cb = 0; cb < p->cinp / VW; cb++) {
        const float *base = ib + ((size_t)cb * 6 * p->wib + (size_t)4 * tx) * VW;
        vecf tt[6][6];
        for (int j = 0; j < 6; j++) {
            vecf d[6], o[6];
            for (int i = 0; i < 6; i++) d[i] = vec_load(base + ((size_t)i * p->wib + j) * VW);
            bt6(d, o);
            for (int i = 0; i < 6; i++) tt[i][j] = o[i];
        }
        for (int i = 0; i < 6; i++) {
            vecf o[6];
            bt6(tt[i], o);
            for (int j = 0; j < 6; j++) vec_store(V + (i * 6 + j) * vstride + (long)t * ldv + cb * VW, o[j]);
        }
    }
    if (p->pad_v) /* the A^T reads of the weight gradient run over MR-rounded rows */
        for (int q = 0; q < NPOS; q++) vec_store(V + q * vstride + (long)t * ldv + p->cinp, (vecf){0});
}

/* ob columns 4tx .. 4tx+3 of its 4 rows <- A^T m A of row t of the 36 matrices M. */
static void output_tile(float *ob, const float *M, long mstride, long ldm, int t, const Plan *p, int tx) {
    for (int ocb = 0; ocb * VW < p->cout; ocb++) {
        vecf tt[4][6];
        for (int j = 0; j < 6; j++) {
            vecf m[6], o[4];
            for (int i = 0; i < 6; i++) m[i] = vec_load(M + (i * 6 + j) * mstride + (long)t * ldm + ocb * VW);
            at6(m, o);
            for (int r = 0; r < 4; r++) tt[r][j] = o[r];
        }
        for (int r = 0; r < 4; r++) {
            vecf o[4];
            at6(tt[r], o);
            float *dst = ob + (((size_t)ocb * 4 + r) * p->wob + (size_t)4 * tx) * VW;
            for (int c = 0; c < 4; c++) vec_store(dst + c * VW, o[c]);
        }
    }
}

/* Z (packed panels, K = tiles of the block) row t <- A e A^T of the 4x4 dout tile at
 * column tx of ob (the dout rows, channels last). */
static void dout_tile(float *Z, long zstride, int T, int t, const float *ob, const Plan *p, int tx) {
    for (int ocb = 0; ocb < p->coutp / VW; ocb++) {
        const float *base = ob + ((size_t)ocb * 4 * p->wob + (size_t)4 * tx) * VW;
        vecf tt[6][4];
        for (int c = 0; c < 4; c++) {
            vecf e[4], o[6];
            for (int r = 0; r < 4; r++) e[r] = vec_load(base + ((size_t)r * p->wob + c) * VW);
            a4(e, o);
            for (int i = 0; i < 6; i++) tt[i][c] = o[i];
        }
        size_t at = moco_gemm_packed_b_index(T, p->coutp, p->nr, t, ocb * VW);
        for (int i = 0; i < 6; i++) {
            vecf o[6];
            a4(tt[i], o);
            for (int j = 0; j < 6; j++) vec_store(Z + (i * 6 + j) * zstride + at, o[j]);
        }
    }
}

/* ------------------------------------------------------------ the kernel transforms */

typedef struct Job {
    const Plan *p;
    float *out, *shared, *threads_ws, *dweight;
    const float *in, *dout, *weight, *bias;
    int pass;
    int C, OC; /* the layer's channels (weight (OC, C, 3, 3)) */
    int parts; /* tasks of the element-wise runs (kernel transforms, reductions) */
    int block, block_tiles; /* the weight gradient's current block and its tiles */
} Job;

/* The 9 taps of 16 kernels, tap q of kernel l at g[q][l]: each kernel's 9 contiguous floats
 * are loaded as a row of a 16x16 block and the block transposed (inserting the 144 floats
 * one by one into zeroed vectors cost a memset call and a trip through memory per kernel
 * row: with it, the transform and that memset were 30% of a 512-channel 4x4 layer's
 * profile, 26.5% without).  A row's last 7 floats are the next
 * kernel's taps, which land in rows 9..15 and are not used; a kernel too close to the
 * tensor's end for that is copied alone.  kern[l] is NULL for the lanes past the layer. */
static void load_taps(vecf *g, const float *const *kern, const float *end) {
    for (int l = 0; l < VW; l++) {
        if (!kern[l]) {
            g[l] = (vecf){0};
        } else if (kern[l] + VW <= end) {
            g[l] = vec_load(kern[l]);
        } else {
            float t[VW] = {0};
            memcpy(t, kern[l], 9 * sizeof *t);
            g[l] = vec_load(t);
        }
    }
    vec_transpose16(g);
}

/* U beyond this size is written with non-temporal stores (AVX-512 builds).  U is 4x the
 * weights (36 positions for 9 taps) and is read once or twice by the products that follow:
 * written through the caches, every line is first read from memory and then evicts what
 * the products need.  Streamed, on Zen 5 at batch 64 (interleaved runs, median GFLOP/s-
 * equivalent of forward and input gradient): 512 channels at 4x4 (U 36 MiB) 330-430 ->
 * 520-570, 256 at 8x8 (9 MiB) +5-10%, 128 at 16x16 (2.3 MiB) within the noise, 64 at
 * 32x32 (0.6 MiB, which the products find in L2 otherwise) 3-7% slower. */
#define STREAM_U_BYTES (4u << 20)

/* U_p (packed) for the task's range of 16-column blocks of the product, every row k: 16
 * kernels per vector (the columns of a block are contiguous in the packed panels).  The
 * packed index of a 16-column block is a multiple of 16 floats, so with the workspace
 * 64-byte aligned every vector store is aligned, as streaming stores require. */
static void kernel_transform_task(void *ctx, int task, int thread) {
    (void)thread;
    const Job *j = ctx;
    const Plan *p = j->p;
    const int flip = j->pass == PASS_INPUT_GRAD;
    const float *end = j->weight + (size_t)j->OC * j->C * 9;
    long lo, hi;
    threadpool_split((p->cout + VW - 1) / VW, j->parts, task, &lo, &hi);
    size_t ub = moco_gemm_packed_b_floats(p->cinp, p->coutp, p->nr);
#if defined(__AVX512F__)
    const int stream = (size_t)NPOS * ub * sizeof(float) > STREAM_U_BYTES && (uintptr_t)j->shared % 64 == 0;
#endif
    for (long blk = lo; blk < hi; blk++) {
        int col0 = (int)blk * VW, lanes = p->cout - col0 < VW ? p->cout - col0 : VW;
        for (int k = 0; k < p->cin; k++) {
            /* forward: column = output channel, k = input channel; input gradient: column =
             * the layer's input channel, k = its output channel, the kernel flipped */
            const float *kern[VW];
            for (int l = 0; l < VW; l++)
                kern[l] = l >= lanes ? NULL
                          : flip     ? j->weight + ((size_t)k * j->C + col0 + l) * 9
                                     : j->weight + ((size_t)(col0 + l) * j->C + k) * 9;
            vecf taps[VW], g[9], t[18], u[36];
            load_taps(taps, kern, end);
            for (int q = 0; q < 9; q++) g[q] = taps[flip ? 8 - q : q];
            for (int c = 0; c < 3; c++) g3(g + c, 3, t + c, 3);     /* t (6, 3) = G g */
            for (int r = 0; r < 6; r++) g3(t + 3 * r, 1, u + 6 * r, 1); /* u (6, 6) = t G^T */
            size_t at = moco_gemm_packed_b_index(p->cinp, p->coutp, p->nr, k, col0);
#if defined(__AVX512F__)
            if (stream) {
                for (int q = 0; q < NPOS; q++) _mm512_stream_ps(j->shared + q * ub + at, (__m512)u[q]);
                continue;
            }
#endif
            for (int q = 0; q < NPOS; q++) vec_store(j->shared + q * ub + at, u[q]);
        }
    }
#if defined(__AVX512F__)
    if (stream) _mm_sfence();
#endif
}

static void run_kernel_transform(Job *j) {
    const Plan *p = j->p;
    /* padded rows (k >= cin) and whole padded column blocks are never written above */
    if (p->cinp > p->cin || p->coutp > round_up(p->cout, VW))
        memset(j->shared, 0, (size_t)NPOS * moco_gemm_packed_b_floats(p->cinp, p->coutp, p->nr) * sizeof *j->shared);
    threadpool_run(j->parts, j->parts, kernel_transform_task, j);
}

/* ------------------------------------------------------------ forward and input gradient */

static float *thread_ws(const Job *j, int thread) { return j->threads_ws + (size_t)thread * j->p->thread_floats; }

static void conv_block_task(void *ctx, int block, int thread) {
    const Job *j = ctx;
    const Plan *p = j->p;
    float *ws = thread_ws(j, thread);
    float *ib = ws, *V = ib + p->ib_floats, *M = V + p->v_floats, *ob = M + p->m_floats;
    const long vstride = (long)p->tbp * p->ldv, mstride = (long)p->tbp * p->ldm;
    const size_t in_image = (size_t)p->cin * p->H * p->W, out_image = (size_t)p->cout * p->H * p->W;
    long g0 = (long)block * p->rows_per_block, g1 = min_l(g0 + p->rows_per_block, (long)p->N * p->th);
    int t = 0;
    for (long g = g0; g < g1; g++) {
        int n = (int)(g / p->th), ty = (int)(g % p->th);
        load_rows(ib, p->wib, j->in + n * in_image, p->cin, p->cinp, p->H, p->W, 4 * ty - 1, 6, 1);
        for (int tx = 0; tx < p->tw; tx++, t++) input_tile(V, vstride, p->ldv, t, ib, p, tx);
    }
    int rows = (int)round_up(t, p->mr);
    for (int q = 0; q < NPOS; q++)
        for (int r = t; r < rows; r++) memset(V + q * vstride + (long)r * p->ldv, 0, (size_t)p->cinp * sizeof *V);
    size_t ub = moco_gemm_packed_b_floats(p->cinp, p->coutp, p->nr);
    for (int q = 0; q < NPOS; q++)
        moco_gemm_packed(MOCO_GEMM_A_ROWS, rows, p->coutp, p->cinp, V + q * vstride, p->ldv, j->shared + q * ub,
                         p->nr, M + q * mstride, p->ldm, 0);
    t = 0;
    for (long g = g0; g < g1; g++) {
        int n = (int)(g / p->th), ty = (int)(g % p->th);
        for (int tx = 0; tx < p->tw; tx++, t++) output_tile(ob, M, mstride, p->ldm, t, p, tx);
        store_rows(j->out + n * out_image, ob, p->wob, p->cout, p->H, p->W, 4 * ty, j->bias);
    }
}

static void run_conv(float *out, float *workspace, const float *in, const float *weight, const float *bias,
                     const Conv2dSize *s, int pass) {
    Plan p;
    make_plan(&p, s, pass);
    Job j = {.p = &p, .out = out, .shared = workspace, .threads_ws = workspace + p.shared_floats, .in = in,
             .weight = weight, .bias = bias, .pass = pass, .C = s->C, .OC = s->OC};
    int threads = s->threads < 1 ? 1 : s->threads;
    j.parts = threads;
    run_kernel_transform(&j);
    threadpool_run(p.blocks, threads, conv_block_task, &j);
}

void winograd_forward(float *out, float *workspace, const float *inp, const float *weight, const float *bias,
                      const Conv2dSize *s) {
    run_conv(out, workspace, inp, weight, bias, s, PASS_FORWARD);
}

void winograd_backward_input(float *dinp, float *workspace, const float *dout, const float *weight,
                             const Conv2dSize *s) {
    run_conv(dinp, workspace, dout, weight, NULL, s, PASS_INPUT_GRAD);
}

/* ------------------------------------------------------------ weight gradient */

/* Tile row `task` of the current block: its V rows and Z rows (disjoint per task). */
static void weight_grad_transform_task(void *ctx, int task, int thread) {
    const Job *j = ctx;
    const Plan *p = j->p;
    float *ws = thread_ws(j, thread), *ib = ws, *ob = ws + p->ib_floats;
    float *V = j->shared + p->du_floats, *Z = V + p->v_floats;
    const long vstride = (long)p->tbp * p->ldv, zstride = (long)moco_gemm_packed_b_floats(p->tb, p->coutp, p->nr);
    const size_t in_image = (size_t)p->cin * p->H * p->W, out_image = (size_t)p->cout * p->H * p->W;
    long g = (long)j->block * p->rows_per_block + task;
    int n = (int)(g / p->th), ty = (int)(g % p->th);
    load_rows(ib, p->wib, j->in + n * in_image, p->cin, p->cinp, p->H, p->W, 4 * ty - 1, 6, 1);
    load_rows(ob, p->wob, j->dout + n * out_image, p->cout, p->coutp, p->H, p->W, 4 * ty, 4, 0);
    for (int tx = 0; tx < p->tw; tx++) {
        int t = task * p->tw + tx;
        input_tile(V, vstride, p->ldv, t, ib, p, tx);
        dout_tile(Z, zstride, j->block_tiles, t, ob, p, tx);
    }
}

/* dU_q (+)= V_q^T Z_q for the task's range of the 36 positions (one writer per dU_q, in
 * block order: the sums do not depend on the thread count). */
static void weight_grad_product_task(void *ctx, int task, int thread) {
    (void)thread;
    const Job *j = ctx;
    const Plan *p = j->p;
    float *V = j->shared + p->du_floats, *Z = V + p->v_floats;
    const long vstride = (long)p->tbp * p->ldv, zstride = (long)moco_gemm_packed_b_floats(p->tb, p->coutp, p->nr);
    long lo, hi;
    threadpool_split(NPOS, j->parts, task, &lo, &hi);
    for (long q = lo; q < hi; q++)
        moco_gemm_packed(MOCO_GEMM_A_COLUMNS, p->cinm, p->coutp, j->block_tiles, V + q * vstride, p->ldv,
                         Z + q * zstride, p->nr, j->shared + (size_t)q * p->cinm * p->coutp, p->coutp, j->block > 0);
}

/* The private mode: task = a contiguous range of blocks, transformed and multiplied on its
 * thread into its own dU. */
static void weight_grad_private_task(void *ctx, int task, int thread) {
    const Job *j = ctx;
    const Plan *p = j->p;
    float *ws = thread_ws(j, thread);
    float *ib = ws, *ob = ib + p->ib_floats, *V = ob + p->ob_floats, *Z = V + p->v_floats;
    float *dU = j->shared + (size_t)task * p->du_floats;
    const long vstride = (long)p->tbp * p->ldv, zstride = (long)moco_gemm_packed_b_floats(p->tb, p->coutp, p->nr);
    const size_t in_image = (size_t)p->cin * p->H * p->W, out_image = (size_t)p->cout * p->H * p->W;
    long b0, b1;
    threadpool_split(p->blocks, p->tasks, task, &b0, &b1);
    for (long block = b0; block < b1; block++) {
        long g0 = block * p->rows_per_block, g1 = min_l(g0 + p->rows_per_block, (long)p->N * p->th);
        int T = (int)((g1 - g0) * p->tw), t = 0;
        for (long g = g0; g < g1; g++) {
            int n = (int)(g / p->th), ty = (int)(g % p->th);
            load_rows(ib, p->wib, j->in + n * in_image, p->cin, p->cinp, p->H, p->W, 4 * ty - 1, 6, 1);
            load_rows(ob, p->wob, j->dout + n * out_image, p->cout, p->coutp, p->H, p->W, 4 * ty, 4, 0);
            for (int tx = 0; tx < p->tw; tx++, t++) {
                input_tile(V, vstride, p->ldv, t, ib, p, tx);
                dout_tile(Z, zstride, T, t, ob, p, tx);
            }
        }
        for (int q = 0; q < NPOS; q++)
            moco_gemm_packed(MOCO_GEMM_A_COLUMNS, p->cinm, p->coutp, T, V + q * vstride, p->ldv, Z + q * zstride,
                             p->nr, dU + (size_t)q * p->cinm * p->coutp, p->coutp, block > b0);
    }
}

/* dU of task 0 += those of tasks 1.., in task order; task = a range of the elements. */
static void reduce_task(void *ctx, int task, int thread) {
    (void)thread;
    const Job *j = ctx;
    const Plan *p = j->p;
    long lo, hi;
    threadpool_split((long)p->du_floats, j->parts, task, &lo, &hi);
    for (int t = 1; t < p->tasks; t++)
        vec_add_into(j->shared + lo, j->shared + t * p->du_floats + lo, (size_t)(hi - lo));
}

/* dweight (OC, C, 3, 3) += G^T dU G for the task's blocks of 16 output channels. */
static void weight_back_task(void *ctx, int task, int thread) {
    (void)thread;
    const Job *j = ctx;
    const Plan *p = j->p;
    const size_t q_stride = (size_t)p->cinm * p->coutp;
    long lo, hi;
    threadpool_split((p->cout + VW - 1) / VW, j->parts, task, &lo, &hi);
    for (long blk = lo; blk < hi; blk++) {
        int oc0 = (int)blk * VW, lanes = p->cout - oc0 < VW ? p->cout - oc0 : VW;
        for (int c = 0; c < p->cin; c++) {
            vecf u[36], t[18], w[9];
            for (int q = 0; q < NPOS; q++) u[q] = vec_load(j->shared + q * q_stride + (size_t)c * p->coutp + oc0);
            for (int col = 0; col < 6; col++) gt6(u + col, 6, t + col, 6); /* t (3, 6) = G^T u */
            for (int r = 0; r < 3; r++) gt6(t + 6 * r, 1, w + 3 * r, 1);    /* w (3, 3) = t G */
            for (int l = 0; l < lanes; l++) {
                float *dw = j->dweight + ((size_t)(oc0 + l) * p->cin + c) * 9;
                for (int q = 0; q < 9; q++) dw[q] += w[q][l];
            }
        }
    }
}

void winograd_backward_params(float *dweight, float *workspace, const float *dout, const float *inp,
                              const Conv2dSize *s) {
    Plan p;
    make_plan(&p, s, PASS_WEIGHT_GRAD);
    Job j = {.p = &p, .shared = workspace, .threads_ws = workspace + p.shared_floats, .in = inp, .dout = dout,
             .dweight = dweight, .pass = PASS_WEIGHT_GRAD, .C = s->C, .OC = s->OC};
    int threads = s->threads < 1 ? 1 : s->threads;
    j.parts = threads;
    if (p.private_du) {
        threadpool_run(p.tasks, threads, weight_grad_private_task, &j);
        if (p.tasks > 1) threadpool_run(threads, threads, reduce_task, &j);
        threadpool_run(threads, threads, weight_back_task, &j);
        return;
    }
    const long tile_rows = (long)p.N * p.th;
    for (j.block = 0; j.block < p.blocks; j.block++) {
        long g0 = (long)j.block * p.rows_per_block, rows = min_l(p.rows_per_block, tile_rows - g0);
        j.block_tiles = (int)(rows * p.tw);
        threadpool_run((int)rows, threads, weight_grad_transform_task, &j);
        threadpool_run(threads, threads, weight_grad_product_task, &j);
    }
    threadpool_run(threads, threads, weight_back_task, &j);
}
