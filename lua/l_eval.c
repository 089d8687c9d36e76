/* lua/l_eval.c: evaluation primitives as moco._eval, used by lua/moco/eval.lua:
 *
 *   knn_predict(query (M,D), bank (N,D), bank_labels (N), k, T, classes [, topn=5])
 *       -> predictions (M, topn): classes (0-based values) ranked best first, by the
 *          official MoCo demo's weighted kNN (rows must be L2-normalised).
 *   neighbours(query (M,D), bank (N,D), k) -> index (M,k) 1-based bank rows, sim (M,k)
 *          the k most similar bank rows of each query, most similar first.
 *   topk_correct(scores (M,C), labels (M), {k1, k2, ...}) -> n1, n2, ...
 *          how many rows have their label among the k best-scored classes.
 *   gather_rows(src (N,...), positions (list of 1-based rows), first, count [, out])
 *          -> out (count,...) = src rows positions[first .. first+count-1].
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>

#include "error.h"
#include "eval.h"
#include "knn.h"
#include "lmoco.h"

static int l_knn_predict(lua_State *L) {
    Tensor *query = lmoco_checktensor(L, 1), *bank = lmoco_checktensor(L, 2), *labels = lmoco_checktensor(L, 3);
    lua_Integer k = luaL_checkinteger(L, 4);
    double T = luaL_checknumber(L, 5);
    lua_Integer classes = luaL_checkinteger(L, 6);
    lua_Integer topn = luaL_optinteger(L, 7, 5);
    char a[128], b[128], c[128];
    if (query->ndim != 2 || bank->ndim != 2 || query->shape[1] != bank->shape[1])
        return luaL_error(L, "knn_predict: query %s and bank %s must be (M, D) and (N, D) with the same D",
                          tensor_shape_str(query, a, sizeof a), tensor_shape_str(bank, b, sizeof b));
    if (labels->ndim != 1 || labels->shape[0] != bank->shape[0])
        return luaL_error(L, "knn_predict: labels %s must have one entry per bank row %s",
                          tensor_shape_str(labels, c, sizeof c), tensor_shape_str(bank, b, sizeof b));
    luaL_argcheck(L, k >= 1 && k <= (1 << 20), 4, "k must be in [1, 2^20]");
    luaL_argcheck(L, classes >= 1 && classes <= (1 << 20), 6, "classes must be in [1, 2^20]");
    luaL_argcheck(L, topn >= 1 && topn <= classes, 7, "topn must be in [1, classes]");
    int64_t shape[2] = {query->shape[0], topn};
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_empty(2, shape));
    int64_t n = bank->shape[0];
    int64_t *lab = lmoco_newarray(L, (size_t)n, sizeof *lab);
    lmoco_checklabels(L, "knn_predict", labels, lab);
    int64_t npred = shape[0] * topn;
    int64_t *pred = lmoco_newarray(L, (size_t)(npred > 0 ? npred : 0), sizeof *pred);
    if (knn_predict(pred, query->data, bank->data, lab, query->shape[0], n, (int)query->shape[1], (int)k, (float)T,
                    (int)classes, (int)topn))
        return lmoco_error(L);
    for (int64_t i = 0; i < shape[0] * topn; i++) box->t->data[i] = (float)pred[i];
    lua_pop(L, 2);
    return 1;
}

static int l_neighbours(lua_State *L) {
    Tensor *query = lmoco_checktensor(L, 1), *bank = lmoco_checktensor(L, 2);
    lua_Integer k = luaL_checkinteger(L, 3);
    char a[128], b[128];
    if (query->ndim != 2 || bank->ndim != 2 || query->shape[1] != bank->shape[1])
        return luaL_error(L, "neighbours: query %s and bank %s must be (M, D) and (N, D) with the same D",
                          tensor_shape_str(query, a, sizeof a), tensor_shape_str(bank, b, sizeof b));
    if (k < 1 || k > bank->shape[0])
        return luaL_error(L, "neighbours: k = %d must be in [1, %d] (the bank's rows)", (int)k, (int)bank->shape[0]);
    int64_t M = query->shape[0], shape[2] = {M, k};
    LTensor *ibox = lmoco_newbox(L);
    lmoco_settensor(L, ibox, tensor_empty(2, shape));
    LTensor *sbox = lmoco_newbox(L);
    lmoco_settensor(L, sbox, tensor_empty(2, shape));
    int64_t *index = lmoco_newarray(L, (size_t)(M * k > 0 ? M * k : 0), sizeof *index);
    if (knn_neighbours(index, sbox->t->data, query->data, bank->data, M, bank->shape[0], (int)query->shape[1],
                       (int)k))
        return lmoco_error(L);
    for (int64_t i = 0; i < M * k; i++) ibox->t->data[i] = (float)(index[i] + 1);
    lua_pop(L, 1);
    return 2;
}

static int l_topk_correct(lua_State *L) {
    Tensor *scores = lmoco_checktensor(L, 1), *labels = lmoco_checktensor(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    char a[128], b[128];
    if (scores->ndim != 2 || labels->ndim != 1 || labels->shape[0] != scores->shape[0])
        return luaL_error(L, "topk_correct: scores %s and labels %s must be (M, C) and (M)",
                          tensor_shape_str(scores, a, sizeof a), tensor_shape_str(labels, b, sizeof b));
    if (scores->shape[1] < 1 || scores->shape[1] > (1 << 24))
        return luaL_error(L, "topk_correct: scores %s must have 1 to 2^24 classes", tensor_shape_str(scores, a, sizeof a));
    int nks = (int)luaL_len(L, 3);
    if (nks < 1 || nks > 16) return luaL_argerror(L, 3, "expected a list of 1 to 16 values of k");
    int ks[16];
    int64_t correct[16];
    for (int j = 0; j < nks; j++) {
        lua_geti(L, 3, j + 1);
        ks[j] = (int)luaL_checkinteger(L, -1);
        lua_pop(L, 1);
    }
    int64_t *lab = lmoco_newarray(L, (size_t)labels->numel, sizeof *lab);
    lmoco_checklabels(L, "topk_correct", labels, lab);
    if (eval_topk_correct(correct, scores->data, lab, scores->shape[0], (int)scores->shape[1], ks, nks))
        return lmoco_error(L);
    lua_pop(L, 1);
    for (int j = 0; j < nks; j++) lua_pushinteger(L, (lua_Integer)correct[j]);
    return nks;
}

static int l_gather_rows(lua_State *L) {
    Tensor *src = lmoco_checktensor(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer first = luaL_checkinteger(L, 3), count = luaL_checkinteger(L, 4);
    Tensor *out = lua_isnoneornil(L, 5) ? NULL : lmoco_checktensor(L, 5);
    lua_Integer len = luaL_len(L, 2);
    if (src->ndim < 1) return luaL_argerror(L, 1, "expected a tensor with at least one dimension");
    if (first < 1 || count < 0 || first - 1 + count > len)
        return luaL_error(L, "gather_rows: positions %d..%d are outside the list of %d", (int)first,
                          (int)(first + count - 1), (int)len);
    int64_t *rows = lmoco_newarray(L, (size_t)(count > 0 ? count : 0), sizeof *rows);
    for (lua_Integer i = 0; i < count; i++) {
        lua_geti(L, 2, first + i);
        int ok;
        lua_Integer p = lua_tointegerx(L, -1, &ok);
        if (!ok) return luaL_error(L, "gather_rows: positions[%d] is not an integer", (int)(first + i));
        /* positions are 1-based: say so in the message, before the 0-based C check */
        if (p < 1 || p > src->shape[0])
            return luaL_error(L, "gather_rows: position %d (entry %d) is outside [1, %d]", (int)p, (int)(i + 1),
                              (int)src->shape[0]);
        rows[i] = (int64_t)p - 1;
        lua_pop(L, 1);
    }
    /* rows stays on the stack until we return (a GC step in the allocation below could free it) */
    if (out) {
        lua_pushvalue(L, 5);
    } else {
        int64_t shape[TENSOR_MAX_DIMS];
        for (int d = 0; d < src->ndim; d++) shape[d] = src->shape[d];
        shape[0] = count;
        LTensor *box = lmoco_newbox(L);
        lmoco_settensor(L, box, tensor_empty(src->ndim, shape));
        out = box->t;
    }
    if (tensor_gather_rows_(out, src, rows, count)) return lmoco_error(L);
    return 1;
}

static const luaL_Reg eval_functions[] = {{"knn_predict", l_knn_predict},
                                          {"neighbours", l_neighbours},
                                          {"topk_correct", l_topk_correct},
                                          {"gather_rows", l_gather_rows},
                                          {NULL, NULL}};

void lmoco_open_eval(lua_State *L) {
    luaL_newlib(L, eval_functions);
    lua_setfield(L, -2, "_eval");
}
