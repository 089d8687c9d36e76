/* lua/l_moco.c: the MoCo primitives of core/moco.h as moco._moco, used by
 * lua/moco/builder.lua:
 *
 *   queue_init(queue (dim,K) [, gen])                 normalised Gaussian columns, in place
 *   queue_enqueue(queue (dim,K), keys (N,dim), ptr)   -> new ptr (0-based, as the official)
 *   infonce(q (N,dim), k (N,dim), queue (dim,K), T [, dq (N,dim) | false [, logits (N,1+K)]])
 *       -> loss, acc1, acc5, dq | nil     (dq = d loss / d q; false skips the gradient)
 *   momentum_update(theta_k, theta_q, m)              theta_k = m theta_k + (1 - m) theta_q
 *   shuffle_indices(N [, gen])   -> perm, inverse     (float tensors of 0-based row indices)
 *   gather_rows(x (N,...), index (N) [, out])         -> out[i] = x[index[i]]
 *
 * The baselines of the MoCo paper (end-to-end, memory bank):
 *   infonce_batch(q (N,dim), k (N,dim), T [, grad=true [, logits (N,N)]])
 *       -> loss, acc1, acc5, dq | nil, dk | nil    (positives on the diagonal of q @ k^T / T)
 *   bank_sample(positives (N), K, M [, gen])  -> index (N, 1+K): column 0 the positives,
 *                                                then K uniform draws from [0, M)
 *   infonce_bank(q (N,dim), bank (M,dim), index (N,1+K), T [, grad=true [, logits (N,1+K)]])
 *       -> loss, acc1, acc5, dq | nil
 *   bank_update(bank (M,dim), q (N,dim), index (N), m)   bank[index] = normalize(m bank + (1-m) q)
 * Indices are 0-based, in float tensors as elsewhere here: exact up to 2^24 bank rows.
 */
#include <lauxlib.h>
#include <string.h>
#include <lua.h>
#include <stdint.h>
#include <stdlib.h>

#include "error.h"
#include "lmoco.h"
#include "moco.h"

static void check_2d(lua_State *L, const char *fn, const char *arg, const Tensor *t) {
    char b[128];
    if (t->ndim != 2) luaL_error(L, "%s: %s should be 2-d, got %s", fn, arg, tensor_shape_str(t, b, sizeof b));
}

static int l_queue_init(lua_State *L) {
    Tensor *queue = lmoco_checktensor(L, 1);
    check_2d(L, "queue_init", "queue", queue);
    Rng *rng = lmoco_optgenerator(L, 2);
    moco_queue_init(queue->data, (int)queue->shape[0], (int)queue->shape[1], rng);
    return 0;
}

static int l_queue_enqueue(lua_State *L) {
    Tensor *queue = lmoco_checktensor(L, 1), *keys = lmoco_checktensor(L, 2);
    lua_Integer ptr = luaL_checkinteger(L, 3);
    char a[128], b[128];
    check_2d(L, "queue_enqueue", "queue", queue);
    check_2d(L, "queue_enqueue", "keys", keys);
    if (keys->shape[1] != queue->shape[0])
        return luaL_error(L, "queue_enqueue: keys %s have dimension %d but the queue %s holds %d-d keys",
                          tensor_shape_str(keys, a, sizeof a), (int)keys->shape[1],
                          tensor_shape_str(queue, b, sizeof b), (int)queue->shape[0]);
    int r = moco_queue_enqueue(queue->data, keys->data, (int)queue->shape[0], (int)queue->shape[1], (int)ptr,
                               (int)keys->shape[0]);
    if (r < 0) return lmoco_error(L);
    lua_pushinteger(L, r);
    return 1;
}

static int l_infonce(lua_State *L) {
    Tensor *q = lmoco_checktensor(L, 1), *k = lmoco_checktensor(L, 2), *queue = lmoco_checktensor(L, 3);
    float T = (float)luaL_checknumber(L, 4);
    int want_grad = !(lua_isboolean(L, 5) && !lua_toboolean(L, 5));
    Tensor *dq_given = lua_isuserdata(L, 5) ? lmoco_checktensor(L, 5) : NULL;
    Tensor *logits_given = lua_isnoneornil(L, 6) ? NULL : lmoco_checktensor(L, 6);
    char a[128], b[128], c[128];
    check_2d(L, "infonce", "q", q);
    check_2d(L, "infonce", "queue", queue);
    if (!tensor_same_shape(q, k) || queue->shape[0] != q->shape[1])
        return luaL_error(L, "infonce: q %s and k %s must have the same shape (N, dim) and the queue %s must be (dim, K)",
                          tensor_shape_str(q, a, sizeof a), tensor_shape_str(k, b, sizeof b),
                          tensor_shape_str(queue, c, sizeof c));
    int N = (int)q->shape[0], dim = (int)q->shape[1], K = (int)queue->shape[1];
    if (dq_given && !tensor_same_shape(dq_given, q))
        return luaL_error(L, "infonce: dq %s should have the shape of q %s", tensor_shape_str(dq_given, a, sizeof a),
                          tensor_shape_str(q, b, sizeof b));
    if (logits_given && (logits_given->ndim != 2 || logits_given->shape[0] != N || logits_given->shape[1] != K + 1))
        return luaL_error(L, "infonce: logits buffer %s should be [%d, %d]",
                          tensor_shape_str(logits_given, a, sizeof a), N, K + 1);
    /* Boxes first, so that nothing leaks if an allocation fails. */
    LTensor *dq_box = NULL;
    if (want_grad && !dq_given) {
        dq_box = lmoco_newbox(L);
        lmoco_settensor(L, dq_box, tensor_empty(2, q->shape));
    }
    LTensor *logits_box = NULL;
    Tensor *logits = logits_given;
    if (!logits) {
        int64_t shape[2] = {N, K + 1};
        logits_box = lmoco_newbox(L);
        lmoco_settensor(L, logits_box, tensor_empty(2, shape));
        logits = logits_box->t;
    }
    Tensor *dq = dq_given ? dq_given : dq_box ? dq_box->t : NULL;
    InfoNceResult r;
    if (moco_infonce(&r, logits->data, dq ? dq->data : NULL, q->data, k->data, queue->data, N, dim, K, T))
        return lmoco_error(L);
    lua_pushnumber(L, r.loss);
    lua_pushnumber(L, r.acc1);
    lua_pushnumber(L, r.acc5);
    if (dq_given) lua_pushvalue(L, 5);
    else if (dq_box) lua_pushvalue(L, logits_box ? -5 : -4);
    else lua_pushnil(L);
    return 4;
}

static int l_momentum_update(lua_State *L) {
    Tensor *tk = lmoco_checktensor(L, 1), *tq = lmoco_checktensor(L, 2);
    double m = luaL_checknumber(L, 3);
    char a[128], b[128];
    if (tk->numel != tq->numel)
        return luaL_error(L, "momentum_update: key parameters %s and query parameters %s differ in size",
                          tensor_shape_str(tk, a, sizeof a), tensor_shape_str(tq, b, sizeof b));
    if (!(m >= 0 && m <= 1)) return luaL_error(L, "momentum_update: m = %f is not in [0, 1]", m);
    moco_momentum_update(tk->data, tq->data, tk->numel, m);
    return 0;
}

static int l_shuffle_indices(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n > 0 && n <= (1 << 24), 1, "batch size must be in [1, 2^24]");
    Rng *rng = lmoco_optgenerator(L, 2);
    int64_t shape[1] = {n};
    LTensor *pbox = lmoco_newbox(L), *ibox = lmoco_newbox(L);
    lmoco_settensor(L, pbox, tensor_empty(1, shape));
    lmoco_settensor(L, ibox, tensor_empty(1, shape));
    int64_t *perm = lmoco_newarray(L, 2 * (size_t)n, sizeof *perm);
    moco_shuffle_indices(perm, perm + n, n, rng);
    for (lua_Integer i = 0; i < n; i++) {
        pbox->t->data[i] = (float)perm[i];
        ibox->t->data[i] = (float)perm[n + i];
    }
    lua_pop(L, 1);
    return 2;
}

/* gather_rows(x (n, ...), index (m) [, out (m, ...)]) -> out: out[i] = x[index[i]], 0-based
 * row numbers held exactly in the float index; m may differ from n (a rank's slice of a
 * shuffled batch). */
static int l_gather_rows(lua_State *L) {
    Tensor *x = lmoco_checktensor(L, 1), *index = lmoco_checktensor(L, 2);
    Tensor *out = lua_isnoneornil(L, 3) ? NULL : lmoco_checktensor(L, 3);
    char a[128], b[128];
    if (x->ndim < 1 || index->ndim != 1)
        return luaL_error(L, "gather_rows: index %s should be 1-d, and x %s at least 1-d",
                          tensor_shape_str(index, a, sizeof a), tensor_shape_str(x, b, sizeof b));
    int64_t n = x->shape[0], m = index->shape[0];
    int64_t *idx = lmoco_newarray(L, (size_t)m, sizeof *idx);
    for (int64_t i = 0; i < m; i++) {
        float v = index->data[i];
        if (!(v >= 0 && v < (float)n) || v != (float)(int64_t)v)
            return luaL_error(L, "gather_rows: index entry %d is %f, not a row in [0, %d)", (int)i + 1, v, (int)n);
        idx[i] = (int64_t)v;
    }
    /* The index copy stays on the stack until we return: popped, the allocation below could
     * run a GC step that frees it before tensor_gather_rows_ reads it. */
    if (!out) {
        int64_t shape[TENSOR_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        shape[0] = m;
        LTensor *box = lmoco_newbox(L);
        lmoco_settensor(L, box, tensor_empty(x->ndim, shape));
        out = box->t;
    } else {
        lua_pushvalue(L, 3);
    }
    if (tensor_gather_rows_(out, x, idx, m)) return lmoco_error(L);
    return 1;
}

/* Float indices are exact integers up to 2^24: the largest memory bank they can address. */
#define MAX_FLOAT_INDEX (1 << 24)

/* The entries of t as int64 indices in [0, M), in a userdata left on the stack; an entry that
 * is not such an integer is an error naming its position. */
static int64_t *push_indices(lua_State *L, const char *fn, const Tensor *t, int64_t M) {
    int64_t n = t->numel;
    int64_t *idx = lmoco_newarray(L, (size_t)n, sizeof *idx);
    for (int64_t i = 0; i < n; i++) {
        float v = t->data[i];
        if (!(v >= 0 && v < (float)M) || v != (float)(int64_t)v)
            luaL_error(L, "%s: index entry %d is %f, not a row in [0, %d)", fn, (int)i + 1, v, (int)M);
        idx[i] = (int64_t)v;
    }
    return idx;
}

static int want_gradient(lua_State *L, int idx) { return !(lua_isboolean(L, idx) && !lua_toboolean(L, idx)); }

/* A (rows, cols) buffer: the tensor at idx when given (checked), else a new one pushed. */
static Tensor *logits_buffer(lua_State *L, const char *fn, int idx, int64_t rows, int64_t cols) {
    char a[128];
    if (!lua_isnoneornil(L, idx)) {
        Tensor *t = lmoco_checktensor(L, idx);
        if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
            luaL_error(L, "%s: logits buffer %s should be [%d, %d]", fn, tensor_shape_str(t, a, sizeof a), (int)rows,
                       (int)cols);
        return t;
    }
    int64_t shape[2] = {rows, cols};
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_empty(2, shape));
    return box->t;
}

static Tensor *new_like(lua_State *L, const Tensor *t) {
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_empty(t->ndim, t->shape));
    return box->t;
}

static int l_infonce_batch(lua_State *L) {
    Tensor *q = lmoco_checktensor(L, 1), *k = lmoco_checktensor(L, 2);
    float T = (float)luaL_checknumber(L, 3);
    int grad = want_gradient(L, 4);
    char a[128], b[128];
    check_2d(L, "infonce_batch", "q", q);
    if (!tensor_same_shape(q, k))
        return luaL_error(L, "infonce_batch: q %s and k %s must have the same shape (N, dim)",
                          tensor_shape_str(q, a, sizeof a), tensor_shape_str(k, b, sizeof b));
    int N = (int)q->shape[0], dim = (int)q->shape[1];
    Tensor *logits = logits_buffer(L, "infonce_batch", 5, N, N);
    int top = lua_gettop(L);
    Tensor *dq = grad ? new_like(L, q) : NULL, *dk = grad ? new_like(L, k) : NULL;
    InfoNceResult r;
    if (moco_infonce_batch(&r, logits->data, dq ? dq->data : NULL, dk ? dk->data : NULL, q->data, k->data, N, dim, T))
        return lmoco_error(L);
    lua_pushnumber(L, r.loss);
    lua_pushnumber(L, r.acc1);
    lua_pushnumber(L, r.acc5);
    if (grad) {
        lua_pushvalue(L, top + 1);
        lua_pushvalue(L, top + 2);
    } else {
        lua_pushnil(L);
        lua_pushnil(L);
    }
    return 5;
}

static int l_bank_sample(lua_State *L) {
    Tensor *pos = lmoco_checktensor(L, 1);
    lua_Integer K = luaL_checkinteger(L, 2), M = luaL_checkinteger(L, 3);
    Rng *rng = lmoco_optgenerator(L, 4);
    char a[128];
    if (pos->ndim != 1 || pos->shape[0] < 1)
        return luaL_error(L, "bank_sample: positives %s should be 1-d with one bank row per sample",
                          tensor_shape_str(pos, a, sizeof a));
    luaL_argcheck(L, K >= 1 && K <= (1 << 24), 2, "the number of negatives K must be in [1, 2^24]");
    luaL_argcheck(L, M >= 1 && M <= MAX_FLOAT_INDEX, 3, "the bank must have 1 to 2^24 rows");
    int N = (int)pos->shape[0];
    int64_t shape[2] = {N, K + 1};
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_empty(2, shape));
    int64_t *positives = push_indices(L, "bank_sample", pos, M);
    int64_t *index = lmoco_newarray(L, (size_t)N * (size_t)(K + 1), sizeof *index);
    if (moco_bank_sample(index, positives, N, (int)K, M, rng)) return lmoco_error(L);
    for (int64_t i = 0; i < (int64_t)N * (K + 1); i++) box->t->data[i] = (float)index[i];
    lua_pop(L, 2);
    return 1;
}

static int l_infonce_bank(lua_State *L) {
    Tensor *q = lmoco_checktensor(L, 1), *bank = lmoco_checktensor(L, 2), *index = lmoco_checktensor(L, 3);
    float T = (float)luaL_checknumber(L, 4);
    int grad = want_gradient(L, 5);
    char a[128], b[128], c[128];
    check_2d(L, "infonce_bank", "q", q);
    check_2d(L, "infonce_bank", "bank", bank);
    check_2d(L, "infonce_bank", "index", index);
    if (bank->shape[1] != q->shape[1] || index->shape[0] != q->shape[0] || index->shape[1] < 2)
        return luaL_error(L, "infonce_bank: q %s, bank %s and index %s should be (N, dim), (M, dim) and (N, 1 + K) "
                          "with K >= 1", tensor_shape_str(q, a, sizeof a), tensor_shape_str(bank, b, sizeof b),
                          tensor_shape_str(index, c, sizeof c));
    if (bank->shape[0] > MAX_FLOAT_INDEX) return luaL_error(L, "infonce_bank: the bank has more than 2^24 rows");
    int N = (int)q->shape[0], dim = (int)q->shape[1], K = (int)index->shape[1] - 1;
    Tensor *logits = logits_buffer(L, "infonce_bank", 6, N, K + 1);
    int top = lua_gettop(L);
    Tensor *dq = grad ? new_like(L, q) : NULL;
    int64_t *idx = push_indices(L, "infonce_bank", index, bank->shape[0]);
    InfoNceResult r;
    if (moco_infonce_bank(&r, logits->data, dq ? dq->data : NULL, q->data, bank->data, idx, N, dim, K,
                          bank->shape[0], T))
        return lmoco_error(L);
    lua_pushnumber(L, r.loss);
    lua_pushnumber(L, r.acc1);
    lua_pushnumber(L, r.acc5);
    if (grad) lua_pushvalue(L, top + 1);
    else lua_pushnil(L);
    return 4;
}

static int l_bank_update(lua_State *L) {
    Tensor *bank = lmoco_checktensor(L, 1), *q = lmoco_checktensor(L, 2), *index = lmoco_checktensor(L, 3);
    double m = luaL_checknumber(L, 4);
    char a[128], b[128], c[128];
    check_2d(L, "bank_update", "bank", bank);
    check_2d(L, "bank_update", "q", q);
    if (q->shape[1] != bank->shape[1] || index->ndim != 1 || index->shape[0] != q->shape[0])
        return luaL_error(L, "bank_update: bank %s, q %s and index %s should be (M, dim), (N, dim) and (N)",
                          tensor_shape_str(bank, a, sizeof a), tensor_shape_str(q, b, sizeof b),
                          tensor_shape_str(index, c, sizeof c));
    if (bank->shape[0] > MAX_FLOAT_INDEX) return luaL_error(L, "bank_update: the bank has more than 2^24 rows");
    int64_t *idx = push_indices(L, "bank_update", index, bank->shape[0]);
    if (moco_bank_update(bank->data, q->data, idx, (int)q->shape[0], (int)q->shape[1], bank->shape[0], m))
        return lmoco_error(L);
    return 0;
}

static const luaL_Reg contrast_functions[] = {
    {"queue_init", l_queue_init},         {"queue_enqueue", l_queue_enqueue},
    {"infonce", l_infonce},               {"momentum_update", l_momentum_update},
    {"shuffle_indices", l_shuffle_indices}, {"gather_rows", l_gather_rows},
    {"infonce_batch", l_infonce_batch},   {"bank_sample", l_bank_sample},
    {"infonce_bank", l_infonce_bank},     {"bank_update", l_bank_update},
    {NULL, NULL}};

void lmoco_open_moco(lua_State *L) {
    luaL_newlib(L, contrast_functions);
    lua_setfield(L, -2, "_moco");
}
