/* lua/l_plot.c: the cairo pictures of core/plot.h as moco._plot, used by lua/moco/plot.lua:
 *
 *   figure{width=, height=, rows=1, cols=1, title=, panels={
 *            {title=, xlabel=, ylabel=, x_integer=false, x_min=, x_max=, empty_text=,
 *             series={{label=, x={...}, y={...}, color=0xRRGGBB, markers=false}, ...}}, ...}}
 *       -> moco.Image (RGB).  A NaN in y leaves a gap in the line.
 *   tile_grid{tiles={{image=, border=0xRRGGBB, caption=}, ...}, cols=, scale=1, border=2,
 *             first_column_gap=0, title=, headers={...}}
 *       -> moco.Image (RGB).  A tile without image leaves its cell empty.
 *
 * Every array the C call reads lives in userdata anchored in one Lua table during the
 * call, so an error anywhere leaks nothing.  The strings and images it points at are
 * anchored there too: the caller's tables may produce them on the fly (an __index
 * metamethod), and nothing else would keep such temporaries from being collected while
 * C still points at them. */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>

#include "error.h"
#include "lmoco.h"
#include "plot.h"

/* Pops the value on top of the stack into the anchor table at index `anchor`. */
static void anchor_value(lua_State *L, int anchor) {
    lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
}

/* Field `key` of the table at t: a string or nil (anchored, so the pointer stays valid
 * during the call). */
static const char *opt_string(lua_State *L, int t, const char *key, int anchor, const char *where) {
    int type = lua_getfield(L, t, key);
    const char *s = NULL;
    if (type == LUA_TSTRING)
        s = lua_tostring(L, -1);
    else if (type != LUA_TNIL)
        luaL_error(L, "%s: %s must be a string, got %s", where, key, lua_typename(L, type));
    anchor_value(L, anchor);
    return s;
}

static lua_Integer opt_integer(lua_State *L, int t, const char *key, lua_Integer dflt, lua_Integer lo, lua_Integer hi,
                               const char *where) {
    lua_Integer v = lmoco_optinteger(L, t, key, dflt, where);
    if (v < lo || v > hi)
        luaL_error(L, "%s: %s = %d is outside [%d, %d]", where, key, (int)v, (int)lo, (int)hi);
    return v;
}

static uint32_t opt_color(lua_State *L, int t, const char *key, uint32_t dflt, const char *where) {
    lua_Integer v = opt_integer(L, t, key, -1, -1, 0xFFFFFF, where);
    return v < 0 ? dflt : (uint32_t)v;
}

/* Userdata of `bytes` bytes kept alive by the anchor table at index `anchor`. */
static void *anchored(lua_State *L, int anchor, size_t bytes) {
    void *p = lmoco_newarray(L, bytes, 1);
    anchor_value(L, anchor);
    return p;
}

/* Pushes field `key` of the table at t and returns its length: a list, or nil (-1) when
 * not required; anything else is an error. */
static lua_Integer push_list(lua_State *L, int t, const char *key, const char *where, int required) {
    int type = lua_getfield(L, t, key);
    if (type == LUA_TNIL && !required) return -1;
    if (type != LUA_TTABLE) luaL_error(L, "%s: %s must be a list, got %s", where, key, lua_typename(L, type));
    return luaL_len(L, -1);
}

/* Field `key` of the table at t, a list of numbers, as an anchored array; *n its length. */
static const double *number_list(lua_State *L, int t, const char *key, int anchor, int *n, const char *where) {
    lua_Integer len = push_list(L, t, key, where, 1);
    if (len > (1 << 24)) luaL_error(L, "%s: %s has %d entries (at most 2^24)", where, key, (int)len);
    double *v = anchored(L, anchor, (size_t)len * sizeof *v);
    for (lua_Integer i = 1; i <= len; i++) {
        int ok;
        lua_geti(L, -1, i);
        v[i - 1] = lua_tonumberx(L, -1, &ok);
        if (!ok) luaL_error(L, "%s: %s[%d] is %s, expected a number (0/0 for a gap)", where, key, (int)i,
                            luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    *n = (int)len;
    return v;
}

static void read_series(lua_State *L, int t, PlotSeries *s, int anchor, const char *where) {
    int nx, ny;
    s->label = opt_string(L, t, "label", anchor, where);
    s->x = number_list(L, t, "x", anchor, &nx, where);
    s->y = number_list(L, t, "y", anchor, &ny, where);
    if (nx != ny) luaL_error(L, "%s: x has %d entries but y has %d", where, nx, ny);
    s->n = nx;
    s->color = opt_color(L, t, "color", PLOT_COLOR_AUTO, where);
    s->markers = lmoco_optboolean(L, t, "markers");
}

static void read_panel(lua_State *L, int t, PlotPanel *p, int anchor, int index) {
    char where[64];
    snprintf(where, sizeof where, "plot.figure: panel %d", index);
    p->title = opt_string(L, t, "title", anchor, where);
    p->xlabel = opt_string(L, t, "xlabel", anchor, where);
    p->ylabel = opt_string(L, t, "ylabel", anchor, where);
    p->empty_text = opt_string(L, t, "empty_text", anchor, where);
    p->x_integer = lmoco_optboolean(L, t, "x_integer");
    p->x_min = lmoco_optnumber(L, t, "x_min", NAN, where);
    p->x_max = lmoco_optnumber(L, t, "x_max", NAN, where);
    lua_Integer n = push_list(L, t, "series", where, 0);
    if (n < 0) n = 0; /* no series: the nil stays on the stack until the pop below */
    if (n > PLOT_MAX_SERIES) luaL_error(L, "%s: %d series (at most %d)", where, (int)n, PLOT_MAX_SERIES);
    int list = lua_gettop(L);
    PlotSeries *series = anchored(L, anchor, (size_t)n * sizeof *series);
    for (lua_Integer i = 1; i <= n; i++) {
        char swhere[96];
        snprintf(swhere, sizeof swhere, "%s, series %d", where, (int)i);
        if (lua_geti(L, list, i) != LUA_TTABLE) luaL_error(L, "%s must be a table", swhere);
        read_series(L, lua_gettop(L), &series[i - 1], anchor, swhere);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    p->series = series;
    p->nseries = (int)n;
}

/* A new, empty moco.Image on the stack: it exists before the drawing can fail. */
static Image *push_empty_image(lua_State *L) {
    Image empty = {0};
    return lmoco_pushimage(L, &empty);
}


static int l_figure(lua_State *L) {
    const char *where = "plot.figure";
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_newtable(L); /* 2: anchor */
    int width = (int)opt_integer(L, 1, "width", 900, 64, PLOT_MAX_SIDE, where);
    int height = (int)opt_integer(L, 1, "height", 600, 64, PLOT_MAX_SIDE, where);
    int rows = (int)opt_integer(L, 1, "rows", 1, 1, PLOT_MAX_PANELS, where);
    int cols = (int)opt_integer(L, 1, "cols", 1, 1, PLOT_MAX_PANELS, where);
    const char *title = opt_string(L, 1, "title", 2, where);
    lua_Integer n = push_list(L, 1, "panels", where, 1); /* 3 */
    if (n > rows * cols) luaL_error(L, "%s: %d panels do not fit %d rows x %d cols", where, (int)n, rows, cols);
    PlotPanel *panels = anchored(L, 2, (size_t)n * sizeof *panels);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_geti(L, 3, i) != LUA_TTABLE) luaL_error(L, "%s: panel %d must be a table", where, (int)i);
        read_panel(L, lua_gettop(L), &panels[i - 1], 2, (int)i);
        lua_pop(L, 1);
    }
    Image *out = push_empty_image(L);
    if (plot_figure(out, width, height, rows, cols, title, panels, (int)n)) return lmoco_error(L);
    lmoco_accountimage(L, out);
    return 1;
}

static int l_tile_grid(lua_State *L) {
    const char *where = "plot.tile_grid";
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_newtable(L); /* 2: anchor */
    PlotTileGrid g = {0};
    g.cols = (int)opt_integer(L, 1, "cols", 8, 1, 4096, where);
    g.scale = (int)opt_integer(L, 1, "scale", 1, 1, 32, where);
    g.border = (int)opt_integer(L, 1, "border", 2, 0, 32, where);
    g.first_column_gap = (int)opt_integer(L, 1, "first_column_gap", 0, 0, 1000, where);
    g.title = opt_string(L, 1, "title", 2, where);
    lua_Integer n = push_list(L, 1, "tiles", where, 1); /* 3 */
    if (n < 1 || n > 100000) luaL_error(L, "%s: expected 1 to 100000 tiles, got %d", where, (int)n);
    PlotTile *tiles = anchored(L, 2, (size_t)n * sizeof *tiles);
    for (lua_Integer i = 1; i <= n; i++) {
        char twhere[64];
        snprintf(twhere, sizeof twhere, "%s: tile %d", where, (int)i);
        if (lua_geti(L, 3, i) != LUA_TTABLE) luaL_error(L, "%s must be a table", twhere);
        int t = lua_gettop(L);
        lua_getfield(L, t, "image");
        tiles[i - 1].image = NULL;
        if (!lua_isnoneornil(L, -1) && !(tiles[i - 1].image = lmoco_toimage(L, -1)))
            luaL_error(L, "%s: image is %s, expected a moco.Image", twhere, luaL_typename(L, -1));
        anchor_value(L, 2);
        tiles[i - 1].border = opt_color(L, t, "border", 0x808080, twhere);
        tiles[i - 1].caption = opt_string(L, t, "caption", 2, twhere);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    g.tiles = tiles;
    g.n = (int)n;
    lua_Integer nh = push_list(L, 1, "headers", where, 0);
    if (nh > 0) {
        int list = lua_gettop(L);
        const char **headers = anchored(L, 2, (size_t)nh * sizeof *headers);
        for (lua_Integer i = 1; i <= nh; i++) {
            int type = lua_geti(L, list, i);
            if (type != LUA_TSTRING && type != LUA_TNIL)
                luaL_error(L, "%s: headers[%d] must be a string, got %s", where, (int)i, lua_typename(L, type));
            headers[i - 1] = lua_tostring(L, -1);
            anchor_value(L, 2);
        }
        g.headers = headers;
        g.nheaders = (int)nh;
    }
    lua_pop(L, 1);
    Image *out = push_empty_image(L);
    if (plot_tile_grid(out, &g)) return lmoco_error(L);
    lmoco_accountimage(L, out);
    return 1;
}

static const luaL_Reg plot_functions[] = {{"figure", l_figure}, {"tile_grid", l_tile_grid}, {NULL, NULL}};

void lmoco_open_plot(lua_State *L) {
    luaL_newlib(L, plot_functions);
    lua_setfield(L, -2, "_plot");
}
