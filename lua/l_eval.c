/* lua/l_eval.c: evaluation primitives as moco._eval, used by lua/moco/eval.lua:
 *
 *   knn_predict(query (M,D), bank (N,D), bank_labels (N), k, T, classes [, topn=5])
 *       -> predictions (M, topn): classes (0-based values) ranked best first, by the
 *          official MoCo demo's weighted kNN (rows must be L2-normalised).
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>

#include "error.h"
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
    int32_t *lab = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *lab, 0);
    for (int64_t i = 0; i < n; i++) lab[i] = (int32_t)labels->data[i];
    int64_t npred = shape[0] * topn;
    int32_t *pred = lua_newuserdatauv(L, (size_t)(npred > 0 ? npred : 1) * sizeof *pred, 0);
    if (knn_predict(pred, query->data, bank->data, lab, query->shape[0], n, (int)query->shape[1], (int)k, (float)T,
                    (int)classes, (int)topn))
        return lmoco_error(L);
    for (int64_t i = 0; i < shape[0] * topn; i++) box->t->data[i] = (float)pred[i];
    lua_pop(L, 2);
    return 1;
}

static const luaL_Reg eval_functions[] = {{"knn_predict", l_knn_predict}, {NULL, NULL}};

void lmoco_open_eval(lua_State *L) {
    luaL_newlib(L, eval_functions);
    lua_setfield(L, -2, "_eval");
}
