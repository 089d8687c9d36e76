/* lua/l_optim.c: optimiser primitives for lua/moco/optim.lua, as moco._optim:
 *
 *   sgd_step(params, momentum_buf|nil, grads, {lr=, momentum=, dampening=, weight_decay=,
 *            nesterov=}, first_step)
 *       One SGD step over flat parameter/gradient blocks of equal size (see core/optim.h).
 */
#include <lauxlib.h>
#include <lua.h>

#include "error.h"
#include "lmoco.h"
#include "optim.h"

static float field_number(lua_State *L, int idx, const char *name, float dflt) {
    return (float)lmoco_optnumber(L, idx, name, dflt, "sgd_step");
}

static int l_sgd_step(lua_State *L) {
    Tensor *params = lmoco_checktensor(L, 1);
    Tensor *buf = lua_isnil(L, 2) ? NULL : lmoco_checktensor(L, 2);
    Tensor *grads = lmoco_checktensor(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    int first_step = lua_toboolean(L, 5);
    SgdConfig c;
    c.lr = field_number(L, 4, "lr", -1);
    c.momentum = field_number(L, 4, "momentum", 0);
    c.dampening = field_number(L, 4, "dampening", 0);
    c.weight_decay = field_number(L, 4, "weight_decay", 0);
    lua_getfield(L, 4, "nesterov");
    c.nesterov = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (sgd_check_config(&c)) return lmoco_error(L);
    char a[128], b[128];
    if (grads->numel != params->numel)
        return luaL_error(L, "sgd_step: gradients %s do not match parameters %s",
                          tensor_shape_str(grads, a, sizeof a), tensor_shape_str(params, b, sizeof b));
    if (c.momentum != 0 && (!buf || buf->numel != params->numel))
        return luaL_error(L, "sgd_step: momentum needs a buffer the size of the parameters %s",
                          tensor_shape_str(params, b, sizeof b));
    sgd_step(params->data, buf ? buf->data : NULL, grads->data, params->numel, &c, first_step);
    return 0;
}

static const luaL_Reg optim_functions[] = {{"sgd_step", l_sgd_step}, {NULL, NULL}};

void lmoco_open_optim(lua_State *L) {
    luaL_newlib(L, optim_functions);
    lua_setfield(L, -2, "_optim");
}
