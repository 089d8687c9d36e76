/* lua/l_tensor.c: the moco.Tensor class (its box and the helpers every binding file uses
 * are in lua/lmoco.c).
 *
 * Lua sees positions 1-based (dimensions, indices, narrow starts, argmax results), as in
 * Lua and Torch7; libmoco is 0-based and this file converts.  Every function checks all
 * its Lua arguments before it allocates anything in C. */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "lmoco.h"

/* A 1-based dimension argument (negative counts from the end) as a 0-based index. */
static int check_dim(lua_State *L, int idx, const Tensor *t) {
    lua_Integer d = luaL_checkinteger(L, idx);
    if (d < 0) d += t->ndim + 1;
    if (d < 1 || d > t->ndim) {
        char b[128];
        luaL_argerror(L, idx, lua_pushfstring(L, "dimension %d out of range for a tensor of shape %s",
                                              (int)luaL_checkinteger(L, idx), tensor_shape_str(t, b, sizeof b)));
    }
    return (int)d - 1;
}

/* ------------------------------------------------------------ creation */

static int l_full_common(lua_State *L, int kind) {
    int64_t shape[TENSOR_MAX_DIMS];
    int ndim = lmoco_checkshape(L, 1, shape);
    float value = kind == 2 ? (float)luaL_checknumber(L, lua_istable(L, 1) ? 2 : ndim + 1) : (float)kind;
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_full(ndim, shape, value));
    return 1;
}
static int l_zeros(lua_State *L) { return l_full_common(L, 0); }
static int l_ones(lua_State *L) { return l_full_common(L, 1); }
static int l_full(lua_State *L) { return l_full_common(L, 2); }

static int l_random_common(lua_State *L, int normal) {
    int64_t shape[TENSOR_MAX_DIMS];
    int ndim = lmoco_checkshape(L, 1, shape);
    Rng *rng = lmoco_optgenerator(L, lua_istable(L, 1) ? 2 : ndim + 1);
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, normal ? tensor_randn(ndim, shape, rng) : tensor_rand(ndim, shape, rng));
    return 1;
}
static int l_rand(lua_State *L) { return l_random_common(L, 0); }
static int l_randn(lua_State *L) { return l_random_common(L, 1); }

static int l_empty(lua_State *L) {
    int64_t shape[TENSOR_MAX_DIMS];
    int ndim = lmoco_checkshape(L, 1, shape);
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_zeros(ndim, shape)); /* zeroed: no uninitialised memory in Lua */
    return 1;
}

static int l_arange(lua_State *L) {
    double start = 0, end, step = 1;
    if (lua_isnoneornil(L, 2)) {
        end = luaL_checknumber(L, 1);
    } else {
        start = luaL_checknumber(L, 1);
        end = luaL_checknumber(L, 2);
        step = luaL_optnumber(L, 3, 1);
    }
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_arange(start, end, step));
    return 1;
}

/* Shape of a nested table, following first elements. */
static int nested_shape(lua_State *L, int idx, int64_t *shape) {
    int ndim = 0;
    lua_pushvalue(L, idx);
    while (lua_istable(L, -1)) {
        if (ndim == TENSOR_MAX_DIMS) luaL_error(L, "moco.tensor: nesting deeper than %d levels", TENSOR_MAX_DIMS);
        shape[ndim++] = (int64_t)luaL_len(L, -1);
        if (shape[ndim - 1] == 0) break;
        lua_geti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    return ndim;
}

/* Copies the nested table at the top of the stack into data, checking every row. */
static void nested_fill(lua_State *L, int depth, int ndim, const int64_t *shape, float **data,
                        char *path, size_t pathlen) {
    if (lua_type(L, -1) != LUA_TTABLE || luaL_len(L, -1) != shape[depth])
        luaL_error(L, "moco.tensor: element %s should be a table of %d entries (got %s)",
                   path[0] ? path : "(top)", (int)shape[depth],
                   lua_istable(L, -1) ? lua_pushfstring(L, "%d entries", (int)luaL_len(L, -1))
                                      : luaL_typename(L, -1));
    for (int64_t i = 1; i <= shape[depth]; i++) {
        lua_geti(L, -1, (lua_Integer)i);
        size_t n = strlen(path);
        snprintf(path + n, pathlen - n, "[%lld]", (long long)i);
        if (depth + 1 == ndim) {
            int isnum;
            lua_Number v = lua_tonumberx(L, -1, &isnum);
            if (!isnum) luaL_error(L, "moco.tensor: element %s is %s, expected a number", path, luaL_typename(L, -1));
            *(*data)++ = (float)v;
        } else {
            nested_fill(L, depth + 1, ndim, shape, data, path, pathlen);
        }
        path[n] = 0;
        lua_pop(L, 1);
    }
}

static int l_tensor(lua_State *L) {
    if (lua_type(L, 1) == LUA_TNUMBER) { /* a 0-d tensor */
        float v = (float)lua_tonumber(L, 1);
        LTensor *box = lmoco_newbox(L);
        lmoco_settensor(L, box, tensor_from_data(0, NULL, &v));
        return 1;
    }
    if (lmoco_totensor(L, 1)) {
        Tensor *src = lmoco_checktensor(L, 1);
        LTensor *box = lmoco_newbox(L);
        lmoco_settensor(L, box, tensor_clone(src));
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    int64_t shape[TENSOR_MAX_DIMS];
    int ndim = nested_shape(L, 1, shape);
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_zeros(ndim, shape));
    if (box->t->numel) {
        float *data = box->t->data;
        char path[128] = "";
        lua_pushvalue(L, 1);
        nested_fill(L, 0, ndim, shape, &data, path, sizeof path);
        lua_pop(L, 1);
    }
    return 1;
}

static int l_load_npy(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_load_npy(path));
    return 1;
}

/* ------------------------------------------------------------ shape queries */

static int m_shape(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int m_size(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    if (lua_isnoneornil(L, 2)) return m_shape(L);
    lua_pushinteger(L, t->shape[check_dim(L, 2, t)]);
    return 1;
}

static int m_dim(lua_State *L) {
    lua_pushinteger(L, lmoco_checktensor(L, 1)->ndim);
    return 1;
}

static int m_numel(lua_State *L) {
    lua_pushinteger(L, lmoco_checktensor(L, 1)->numel);
    return 1;
}

static int m_len(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    if (t->ndim == 0) return luaL_error(L, "len() of a 0-d tensor");
    lua_pushinteger(L, t->shape[0]);
    return 1;
}

static int m_is_view(lua_State *L) {
    lua_pushboolean(L, tensor_is_view(lmoco_checktensor(L, 1)));
    return 1;
}

/* ------------------------------------------------------------ elements */

/* Flat offset of the 1-based indices at idx.. (exactly ndim of them). */
static int64_t element_offset(lua_State *L, const Tensor *t, int idx, int nidx) {
    char b[128];
    if (nidx != t->ndim)
        luaL_error(L, "expected %d indices for a tensor of shape %s, got %d", t->ndim,
                   tensor_shape_str(t, b, sizeof b), nidx);
    int64_t off = 0;
    for (int d = 0; d < t->ndim; d++) {
        lua_Integer i = luaL_checkinteger(L, idx + d);
        if (i < 0) i += t->shape[d] + 1;
        if (i < 1 || i > t->shape[d])
            luaL_argerror(L, idx + d, lua_pushfstring(L, "index %d out of range for dimension %d of size %d",
                                                      (int)luaL_checkinteger(L, idx + d), d + 1, (int)t->shape[d]));
        off = off * t->shape[d] + (i - 1);
    }
    return off;
}

static int m_get(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    lua_pushnumber(L, t->data[element_offset(L, t, 2, lua_gettop(L) - 1)]);
    return 1;
}

static int m_set(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    int top = lua_gettop(L);
    float v = (float)luaL_checknumber(L, top);
    t->data[element_offset(L, t, 2, top - 2)] = v;
    lua_settop(L, 1);
    return 1;
}

static int m_item(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    char b[128];
    if (t->numel != 1)
        return luaL_error(L, "item: tensor of shape %s has %d elements, expected 1",
                          tensor_shape_str(t, b, sizeof b), (int)t->numel);
    lua_pushnumber(L, t->data[0]);
    return 1;
}

static void push_table(lua_State *L, const float **data, const Tensor *t, int depth) {
    if (depth == t->ndim) {
        lua_pushnumber(L, *(*data)++);
        return;
    }
    lua_createtable(L, (int)t->shape[depth], 0);
    for (int64_t i = 0; i < t->shape[depth]; i++) {
        push_table(L, data, t, depth + 1);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static int m_totable(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    luaL_checkstack(L, t->ndim + 4, "tensor too deep");
    const float *data = t->data;
    push_table(L, &data, t, 0);
    return 1;
}

/* ------------------------------------------------------------ views and copies */

static int m_reshape(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    int64_t shape[TENSOR_MAX_DIMS];
    int ndim = 0;
    if (lua_istable(L, 2)) {
        lua_Integer n = luaL_len(L, 2);
        if (n > TENSOR_MAX_DIMS) luaL_argerror(L, 2, "too many dimensions");
        for (lua_Integer i = 1; i <= n; i++) {
            lua_geti(L, 2, i);
            shape[ndim++] = luaL_checkinteger(L, -1);
            lua_pop(L, 1);
        }
    } else {
        int top = lua_gettop(L);
        if (top - 1 > TENSOR_MAX_DIMS) luaL_argerror(L, 2 + TENSOR_MAX_DIMS, "too many dimensions");
        for (int i = 2; i <= top; i++) shape[ndim++] = luaL_checkinteger(L, i);
    }
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_reshape(t, ndim, shape));
    return 1;
}

static int m_narrow(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    int dim = check_dim(L, 2, t);
    lua_Integer start = luaL_checkinteger(L, 3), length = luaL_checkinteger(L, 4);
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_narrow(t, dim, start - 1, length));
    return 1;
}

static int m_select(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    int dim = check_dim(L, 2, t);
    lua_Integer index = luaL_checkinteger(L, 3);
    if (index < 0) index += t->shape[dim] + 1;
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_select(t, dim, index - 1));
    return 1;
}

static int m_transpose(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    int d0, d1;
    if (lua_isnoneornil(L, 2)) {
        if (t->ndim != 2) {
            char b[128];
            return luaL_error(L, "transpose: with no dimensions the tensor must be 2-d, got shape %s",
                              tensor_shape_str(t, b, sizeof b));
        }
        d0 = 0;
        d1 = 1;
    } else {
        d0 = check_dim(L, 2, t);
        d1 = check_dim(L, 3, t);
    }
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_transpose(t, d0, d1));
    return 1;
}

static int m_clone(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_clone(t));
    return 1;
}

static int m_copy(lua_State *L) {
    Tensor *dst = lmoco_checktensor(L, 1), *src = lmoco_checktensor(L, 2);
    if (tensor_copy_(dst, src)) return lmoco_error(L);
    lua_settop(L, 1);
    return 1;
}

static int m_fill(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    tensor_fill_(t, (float)luaL_checknumber(L, 2));
    lua_settop(L, 1);
    return 1;
}

static int m_zero(lua_State *L) {
    tensor_fill_(lmoco_checktensor(L, 1), 0.0f);
    lua_settop(L, 1);
    return 1;
}

/* ------------------------------------------------------------ arithmetic */

/* a op b where either side may be a number; `inplace` writes into a (a must be a tensor). */
static int binary(lua_State *L, TensorBinaryOp op, int inplace) {
    Tensor *a = lmoco_totensor(L, 1), *b = lmoco_totensor(L, 2);
    if (!a && !b) return luaL_error(L, "arithmetic on a closed tensor");
    if (inplace) {
        a = lmoco_checktensor(L, 1);
        if (b) {
            if (tensor_binary_(op, a, b)) return lmoco_error(L);
        } else {
            tensor_scalar_(op, a, (float)luaL_checknumber(L, 2));
        }
        lua_settop(L, 1);
        return 1;
    }
    if (a && b) {
        lmoco_checktensor(L, 1);
        lmoco_checktensor(L, 2);
        LTensor *box = lmoco_newbox(L);
        lmoco_settensor(L, box, tensor_binary(op, a, b));
        return 1;
    }
    /* one side is a number */
    int tensor_first = a != NULL;
    Tensor *t = lmoco_checktensor(L, tensor_first ? 1 : 2);
    float s = (float)luaL_checknumber(L, tensor_first ? 2 : 1);
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_clone(t));
    if (tensor_first) tensor_scalar_(op, box->t, s);
    else tensor_rscalar_(op, box->t, s);
    return 1;
}

static int m_add(lua_State *L) { return binary(L, TENSOR_ADD, 0); }
static int m_sub(lua_State *L) { return binary(L, TENSOR_SUB, 0); }
static int m_mul(lua_State *L) { return binary(L, TENSOR_MUL, 0); }
static int m_div(lua_State *L) { return binary(L, TENSOR_DIV, 0); }
static int m_add_(lua_State *L) { return binary(L, TENSOR_ADD, 1); }
static int m_sub_(lua_State *L) { return binary(L, TENSOR_SUB, 1); }
static int m_mul_(lua_State *L) { return binary(L, TENSOR_MUL, 1); }
static int m_div_(lua_State *L) { return binary(L, TENSOR_DIV, 1); }

static int m_unm(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_clone(t));
    tensor_neg_(box->t);
    return 1;
}

static int m_scale_(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    tensor_scale_(t, (float)luaL_checknumber(L, 2));
    lua_settop(L, 1);
    return 1;
}

/* y:axpy_(alpha, x): y += alpha * x */
static int m_axpy_(lua_State *L) {
    Tensor *y = lmoco_checktensor(L, 1);
    float alpha = (float)luaL_checknumber(L, 2);
    Tensor *x = lmoco_checktensor(L, 3);
    if (tensor_axpy_(y, alpha, x)) return lmoco_error(L);
    lua_settop(L, 1);
    return 1;
}

/* Unary ops: out-of-place returns a new tensor, the '_' form modifies in place. */
static int unary(lua_State *L, void (*fn)(Tensor *), int inplace) {
    Tensor *t = lmoco_checktensor(L, 1);
    if (inplace) {
        fn(t);
        lua_settop(L, 1);
        return 1;
    }
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_clone(t));
    fn(box->t);
    return 1;
}
static int m_exp(lua_State *L) { return unary(L, tensor_exp_, 0); }
static int m_exp_(lua_State *L) { return unary(L, tensor_exp_, 1); }
static int m_log(lua_State *L) { return unary(L, tensor_log_, 0); }
static int m_log_(lua_State *L) { return unary(L, tensor_log_, 1); }
static int m_sqrt(lua_State *L) { return unary(L, tensor_sqrt_, 0); }
static int m_sqrt_(lua_State *L) { return unary(L, tensor_sqrt_, 1); }
static int m_neg_(lua_State *L) { return unary(L, tensor_neg_, 1); }

static int clamp(lua_State *L, int inplace) {
    Tensor *t = lmoco_checktensor(L, 1);
    float lo = lua_isnoneornil(L, 2) ? NAN : (float)luaL_checknumber(L, 2);
    float hi = lua_isnoneornil(L, 3) ? NAN : (float)luaL_checknumber(L, 3);
    if (inplace) {
        tensor_clamp_(t, lo, hi);
        lua_settop(L, 1);
        return 1;
    }
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_clone(t));
    tensor_clamp_(box->t, lo, hi);
    return 1;
}
static int m_clamp(lua_State *L) { return clamp(L, 0); }
static int m_clamp_(lua_State *L) { return clamp(L, 1); }

/* ------------------------------------------------------------ reductions */

static int reduce(lua_State *L, Tensor *(*fn)(const Tensor *, int, int), double (*all)(const Tensor *)) {
    Tensor *t = lmoco_checktensor(L, 1);
    if (lua_isnoneornil(L, 2)) {
        lua_pushnumber(L, all(t));
        return 1;
    }
    int dim = check_dim(L, 2, t);
    int keepdim = lua_toboolean(L, 3);
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, fn(t, dim, keepdim));
    return 1;
}
static int m_sum(lua_State *L) { return reduce(L, tensor_sum, tensor_sum_all); }
static int m_mean(lua_State *L) { return reduce(L, tensor_mean, tensor_mean_all); }

/* t:max() -> value, position (1-based, flat);  t:max(dim [, keepdim]) -> values, positions */
static int m_max(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    if (lua_isnoneornil(L, 2)) {
        float v;
        int64_t i;
        if (tensor_max_all(t, &v, &i)) return lmoco_error(L);
        lua_pushnumber(L, v);
        lua_pushinteger(L, i + 1);
        return 2;
    }
    int dim = check_dim(L, 2, t);
    int keepdim = lua_toboolean(L, 3);
    LTensor *vbox = lmoco_newbox(L);
    LTensor *ibox = lmoco_newbox(L);
    Tensor *idx = NULL;
    Tensor *values = tensor_max(t, dim, keepdim, &idx);
    if (!values) return lmoco_error(L);
    vbox->t = values;
    ibox->t = idx;
    tensor_scalar_(TENSOR_ADD, idx, 1.0f); /* Lua positions are 1-based */
    return 2;
}

static int m_argmax(lua_State *L) {
    int n = m_max(L);
    lua_remove(L, -n);  /* drop the values */
    return 1;
}

/* ------------------------------------------------------------ linear algebra */

/* a:matmul(b [, trans_a [, trans_b]]) */
static int m_matmul(lua_State *L) {
    Tensor *a = lmoco_checktensor(L, 1), *b = lmoco_checktensor(L, 2);
    int ta = lua_toboolean(L, 3), tb = lua_toboolean(L, 4);
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_matmul(a, ta, b, tb));
    return 1;
}

static int normalize(lua_State *L, int inplace) {
    Tensor *t = lmoco_checktensor(L, 1);
    float eps = (float)luaL_optnumber(L, 2, 1e-12);
    if (inplace) {
        if (tensor_normalize_rows_(t, eps)) return lmoco_error(L);
        lua_settop(L, 1);
        return 1;
    }
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_clone(t));
    if (tensor_normalize_rows_(box->t, eps)) return lmoco_error(L);
    return 1;
}
static int m_normalize(lua_State *L) { return normalize(L, 0); }
static int m_normalize_(lua_State *L) { return normalize(L, 1); }

static int m_save_npy(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    const char *path = luaL_checkstring(L, 2);
    if (tensor_save_npy(t, path)) return lmoco_error(L);
    lua_settop(L, 1);
    return 1;
}

/* ------------------------------------------------------------ metamethods */

static void format_value(luaL_Buffer *b, float v) {
    char s[32];
    snprintf(s, sizeof s, "%10.4f", v);
    if (fabsf(v) >= 1e5f || (v != 0 && fabsf(v) < 1e-3f)) snprintf(s, sizeof s, "%10.3e", v);
    luaL_addstring(b, s);
}

/* Up to `cap` entries of one row, with "..." in the middle when longer. */
static void format_row(luaL_Buffer *b, const float *row, int64_t n, int64_t cap) {
    luaL_addchar(b, '[');
    for (int64_t j = 0; j < n; j++) {
        if (n > cap && j == cap / 2) {
            luaL_addstring(b, "        ...,");
            j = n - cap / 2;
        }
        format_value(b, row[j]);
        if (j + 1 < n) luaL_addchar(b, ',');
    }
    luaL_addchar(b, ']');
}

static int m_tostring(lua_State *L) {
    LTensor *box = luaL_checkudata(L, 1, MOCO_TENSOR_MT);
    if (!box->t) {
        lua_pushstring(L, "moco.Tensor (closed)");
        return 1;
    }
    Tensor *t = box->t;
    char shape[128];
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_pushfstring(L, "moco.Tensor %s\n", tensor_shape_str(t, shape, sizeof shape));
    luaL_addvalue(&b);
    if (t->ndim == 0) {
        format_value(&b, t->data[0]);
    } else if (t->ndim <= 2) {
        int64_t rows = t->ndim == 1 ? 1 : t->shape[0], cols = t->shape[t->ndim - 1];
        if (t->ndim == 2) luaL_addchar(&b, '[');
        for (int64_t r = 0; r < rows; r++) {
            if (rows > 8 && r == 4) {
                luaL_addstring(&b, " ...\n");
                r = rows - 4;
            }
            if (r && t->ndim == 2) luaL_addchar(&b, ' ');
            format_row(&b, t->data + r * cols, cols, 8);
            if (r + 1 < rows) luaL_addstring(&b, ",\n");
        }
        if (t->ndim == 2) luaL_addchar(&b, ']');
    } else if (t->numel) {
        /* Higher dimensions: summary statistics instead of a wall of numbers. */
        float mx, mn = t->data[0];
        tensor_max_all(t, &mx, NULL);
        for (int64_t i = 0; i < t->numel; i++) mn = t->data[i] < mn ? t->data[i] : mn;
        lua_pushfstring(L, "min %f  max %f  mean %f\nfirst: ", (double)mn, (double)mx, tensor_mean_all(t));
        luaL_addvalue(&b);
        format_row(&b, t->data, t->numel < 6 ? t->numel : 6, 8);
        if (t->numel > 6) luaL_addstring(&b, " ...");
    }
    luaL_pushresult(&b);
    return 1;
}

static int m_gc(lua_State *L) {
    LTensor *box = luaL_checkudata(L, 1, MOCO_TENSOR_MT);
    tensor_free(box->t);
    box->t = NULL;
    return 0;
}

/* t[i]: a number for 1-d tensors, otherwise the i-th sub-tensor (a view); t.method: methods. */
static int m_index(lua_State *L) {
    if (lua_type(L, 2) == LUA_TNUMBER) {
        Tensor *t = lmoco_checktensor(L, 1);
        lua_Integer i = luaL_checkinteger(L, 2);
        if (t->ndim == 0) return luaL_error(L, "cannot index a 0-d tensor");
        if (i < 0) i += t->shape[0] + 1;
        if (i < 1 || i > t->shape[0]) {
            char b[128];
            return luaL_error(L, "index %d out of range for dimension 1 of shape %s",
                              (int)luaL_checkinteger(L, 2), tensor_shape_str(t, b, sizeof b));
        }
        if (t->ndim == 1) {
            lua_pushnumber(L, t->data[i - 1]);
            return 1;
        }
        LTensor *box = lmoco_newbox(L);
        lmoco_settensor(L, box, tensor_select(t, 0, i - 1));
        return 1;
    }
    luaL_getmetatable(L, MOCO_TENSOR_MT);
    lua_getfield(L, -1, "methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

/* t[i] = number | tensor */
static int m_newindex(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    if (t->ndim == 0) return luaL_error(L, "cannot index a 0-d tensor");
    if (i < 0) i += t->shape[0] + 1;
    if (i < 1 || i > t->shape[0]) {
        char b[128];
        return luaL_error(L, "index %d out of range for dimension 1 of shape %s",
                          (int)luaL_checkinteger(L, 2), tensor_shape_str(t, b, sizeof b));
    }
    int64_t inner = t->numel / t->shape[0];
    float *row = t->data + (i - 1) * inner;
    Tensor *src = lmoco_totensor(L, 3);
    if (src) {
        if (src->numel != inner) {
            char a[128], b[128];
            return luaL_error(L, "cannot assign a tensor of shape %s to a row of tensor %s",
                              tensor_shape_str(src, a, sizeof a), tensor_shape_str(t, b, sizeof b));
        }
        memmove(row, src->data, (size_t)inner * sizeof(float));
    } else {
        float v = (float)luaL_checknumber(L, 3);
        for (int64_t j = 0; j < inner; j++) row[j] = v;
    }
    return 0;
}

static const luaL_Reg tensor_methods[] = {
    {"shape", m_shape},       {"size", m_size},         {"dim", m_dim},
    {"numel", m_numel},       {"is_view", m_is_view},   {"get", m_get},
    {"set", m_set},           {"item", m_item},         {"totable", m_totable},
    {"reshape", m_reshape},   {"view", m_reshape},      {"narrow", m_narrow},
    {"select", m_select},     {"transpose", m_transpose}, {"t", m_transpose},
    {"clone", m_clone},       {"copy", m_copy},         {"fill", m_fill},
    {"zero", m_zero},         {"add", m_add},           {"sub", m_sub},
    {"mul", m_mul},           {"div", m_div},           {"add_", m_add_},
    {"sub_", m_sub_},         {"mul_", m_mul_},         {"div_", m_div_},
    {"scale_", m_scale_},     {"axpy_", m_axpy_},       {"neg", m_unm},
    {"neg_", m_neg_},         {"exp", m_exp},           {"exp_", m_exp_},
    {"log", m_log},           {"log_", m_log_},         {"sqrt", m_sqrt},
    {"sqrt_", m_sqrt_},       {"clamp", m_clamp},       {"clamp_", m_clamp_},
    {"sum", m_sum},           {"mean", m_mean},         {"max", m_max},
    {"argmax", m_argmax},     {"matmul", m_matmul},     {"normalize", m_normalize},
    {"normalize_", m_normalize_}, {"save_npy", m_save_npy}, {"free", m_gc},
    {NULL, NULL}};

static const luaL_Reg tensor_meta[] = {
    {"__index", m_index}, {"__newindex", m_newindex}, {"__gc", m_gc},   {"__close", m_gc},
    {"__tostring", m_tostring}, {"__len", m_len},     {"__add", m_add}, {"__sub", m_sub},
    {"__mul", m_mul},     {"__div", m_div},           {"__unm", m_unm}, {NULL, NULL}};

static const luaL_Reg tensor_functions[] = {
    {"tensor", l_tensor}, {"zeros", l_zeros}, {"ones", l_ones},   {"full", l_full},
    {"empty", l_empty},   {"rand", l_rand},   {"randn", l_randn}, {"arange", l_arange},
    {"load_npy", l_load_npy}, {"matmul", m_matmul}, {NULL, NULL}};

void lmoco_open_tensor(lua_State *L) {
    lmoco_newclass(L, MOCO_TENSOR_MT, tensor_methods, tensor_meta);
    luaL_setfuncs(L, tensor_functions, 0);
}
