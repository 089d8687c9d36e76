/* lua/l_dist.c: the binding of core/dist.h, as moco._dist (lua/moco/dist.lua builds the
 * public moco.dist on it).
 *
 *  init()                    -> rank, size: starts the backend (MPI under mpirun); idempotent
 *  rank(), size()            -> integers
 *  backend()                 -> "single" or "mpi (Open MPI ..., N ranks)"
 *  have_mpi()                -> whether this build has the MPI backend
 *  allreduce_sum_(t)         -> t, summed over the ranks in place (contiguous float tensor)
 *  allgather(t [, out])      -> out (size * t:size(1), ...): every rank's t, rank by rank
 *  bcast_(t, root)           -> t, root's values on every rank
 *  barrier()
 *  abort(code)               ends every rank with this status (single backend: returns)
 *  finalize() */
#include <lauxlib.h>
#include <string.h>

#include "dist.h"
#include "error.h"
#include "lmoco.h"

static int l_init(lua_State *L) {
    if (dist_init()) return lmoco_error(L);
    lua_pushinteger(L, dist_rank());
    lua_pushinteger(L, dist_size());
    return 2;
}

static int l_rank(lua_State *L) {
    lua_pushinteger(L, dist_rank());
    return 1;
}

static int l_size(lua_State *L) {
    lua_pushinteger(L, dist_size());
    return 1;
}

static int l_backend(lua_State *L) {
    lua_pushstring(L, dist_backend());
    return 1;
}

static int l_have_mpi(lua_State *L) {
    lua_pushboolean(L, dist_have_mpi());
    return 1;
}

static int l_allreduce_sum_(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    if (dist_allreduce_sum_f32(t->data, t->numel)) return lmoco_error(L);
    lua_settop(L, 1);
    return 1;
}

static int l_allgather(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    if (t->ndim < 1) luaL_argerror(L, 1, "a tensor of at least one dimension expected");
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[0] *= dist_size();
    Tensor *out = lmoco_totensor(L, 2);
    if (out) {
        int same = out->ndim == t->ndim;
        for (int i = 0; same && i < t->ndim; i++) same = out->shape[i] == shape[i];
        if (!same) luaL_argerror(L, 2, "out should have the input's shape with size() times its first dimension");
        lua_pushvalue(L, 2);
    } else {
        LTensor *box = lmoco_newbox(L);
        lmoco_settensor(L, box, tensor_empty(t->ndim, shape));
        out = box->t;
    }
    if (out->data == t->data && dist_size() > 1) luaL_argerror(L, 2, "out must not be the input");
    if (dist_allgather_f32(t->data, t->numel, out->data)) return lmoco_error(L);
    return 1;
}

static int l_bcast_(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    lua_Integer root = luaL_checkinteger(L, 2);
    if (root < 0 || root >= dist_size()) luaL_argerror(L, 2, "not a rank");
    if (dist_bcast(t->data, (size_t)t->numel * sizeof(float), (int)root)) return lmoco_error(L);
    lua_settop(L, 1);
    return 1;
}

static int l_barrier(lua_State *L) {
    if (dist_barrier()) return lmoco_error(L);
    return 0;
}

static int l_abort(lua_State *L) {
    dist_abort((int)luaL_optinteger(L, 1, 1));
    return 0;
}

/* moco._dist.mark_agreed_failure(): the error about to be raised is raised by every rank
 * together (see dist.h): the top level ends this rank without MPI_Abort. */
static int l_mark_agreed_failure(lua_State *L) {
    (void)L;
    dist_mark_agreed_failure();
    return 0;
}

static int l_finalize(lua_State *L) {
    if (dist_finalize()) return lmoco_error(L);
    return 0;
}

void lmoco_open_dist(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"init", l_init},         {"rank", l_rank},       {"size", l_size},           {"backend", l_backend},
        {"have_mpi", l_have_mpi}, {"allreduce_sum_", l_allreduce_sum_}, {"allgather", l_allgather},
        {"bcast_", l_bcast_},     {"barrier", l_barrier}, {"abort", l_abort},         {"finalize", l_finalize},
        {"mark_agreed_failure", l_mark_agreed_failure},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    lua_setfield(L, -2, "_dist");
}
