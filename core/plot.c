/* core/plot.c: line-chart figures and image-tile grids drawn with cairo (see plot.h). */
#include "plot.h"

#include <cairo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* matplotlib's "tab10" colours: readable on white and told apart by most viewers. */
static const uint32_t palette[] = {0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd,
                                   0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22, 0x17becf};
#define PALETTE_SIZE ((int)(sizeof palette / sizeof palette[0]))

#define FONT "sans-serif"
#define TITLE_SIZE 15.0
#define LABEL_SIZE 12.5
#define TICK_SIZE 11.0
#define LEGEND_SIZE 11.0

static void set_color(cairo_t *cr, uint32_t c) {
    cairo_set_source_rgb(cr, ((c >> 16) & 255) / 255.0, ((c >> 8) & 255) / 255.0, (c & 255) / 255.0);
}

static void set_font(cairo_t *cr, double size, int bold) {
    cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

static double text_width(cairo_t *cr, const char *s) {
    cairo_text_extents_t e;
    cairo_text_extents(cr, s, &e);
    return e.x_advance;
}

/* Draws s (current font) so that the point (x, y) sits at fraction (ax, ay) of its box:
 * ax 0 = left edge, 0.5 = centre, 1 = right edge; ay likewise from the font's ascent (0)
 * to its descent (1), so labels of one row share a baseline whatever their glyphs. */
static void draw_text(cairo_t *cr, const char *s, double x, double y, double ax, double ay) {
    cairo_font_extents_t fe;
    cairo_font_extents(cr, &fe);
    double baseline = y + fe.ascent - ay * (fe.ascent + fe.descent);
    cairo_move_to(cr, x - ax * text_width(cr, s), baseline);
    cairo_show_text(cr, s);
}

static int has_text(const char *s) { return s && s[0]; }

/* ------------------------------------------------------------------ axes */

typedef struct Axis {
    double lo, hi, step; /* the axis spans [lo, hi]; ticks at multiples of step */
} Axis;

/* 1, 2 or 5 times a power of ten, the nearest "nice" step at or above raw. */
static double nice_step(double raw) {
    double mag = pow(10.0, floor(log10(raw)));
    double f = raw / mag;
    double nice = f <= 1.0 ? 1.0 : f <= 2.0 ? 2.0 : f <= 5.0 ? 5.0 : 10.0;
    return nice * mag;
}

/* An axis covering [lo, hi] with about `target` ticks, its ends on ticks. */
static Axis make_axis(double lo, double hi, int target, int integer) {
    if (!(hi > lo)) {
        double pad = fabs(lo) > 0 ? fabs(lo) * 0.1 : 1.0;
        if (integer && pad < 1) pad = 1;
        lo -= pad;
        hi += pad;
    }
    Axis a;
    a.step = nice_step((hi - lo) / target);
    if (integer && a.step < 1) a.step = 1;
    a.lo = floor(lo / a.step + 1e-9) * a.step;
    a.hi = ceil(hi / a.step - 1e-9) * a.step;
    return a;
}

/* Tick text with as many decimals as the step needs ("0.005", "2.5", "40"). */
static void format_tick(char *buf, size_t size, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0; /* no "-0" or "1e-17" */
    double mag = fmax(fabs(v), step);
    if (mag >= 1e6 || step < 1e-4) {
        snprintf(buf, size, "%.3g", v);
        return;
    }
    int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    snprintf(buf, size, "%.*f", decimals, v);
}

static int point_ok(const PlotSeries *s, int i) { return isfinite(s->x[i]) && isfinite(s->y[i]); }

/* ------------------------------------------------------------------ one panel */

typedef struct Frame {
    double left, right, top, bottom; /* the plot area (the frame) in pixels */
    Axis x, y;
} Frame;

/* The axis ranges map to the frame less this inset, so that points on the first or last
 * tick (the ends of a curve, its markers) are not cut by the frame. */
#define INSET 8.0

static double to_px(const Frame *f, double x) {
    return f->left + INSET + (x - f->x.lo) / (f->x.hi - f->x.lo) * (f->right - f->left - 2 * INSET);
}
static double to_py(const Frame *f, double y) {
    return f->bottom - INSET - (y - f->y.lo) / (f->y.hi - f->y.lo) * (f->bottom - f->top - 2 * INSET);
}

static uint32_t series_color(const PlotSeries *s, int index) {
    return s->color == PLOT_COLOR_AUTO ? palette[index % PALETTE_SIZE] : (s->color & 0xFFFFFF);
}

/* The legend goes in the corner of the plot area that hides the fewest points. */
static void draw_legend(cairo_t *cr, const PlotPanel *p, const Frame *f) {
    int entries = 0;
    double maxw = 0;
    set_font(cr, LEGEND_SIZE, 0);
    for (int s = 0; s < p->nseries; s++) {
        if (!has_text(p->series[s].label)) continue;
        entries++;
        maxw = fmax(maxw, text_width(cr, p->series[s].label));
    }
    if (entries == 0) return;
    double line_h = LEGEND_SIZE + 5, bw = 34 + maxw + 8, bh = entries * line_h + 8, margin = 6;
    double best_x = f->right - bw - margin, best_y = f->top + margin;
    long best_hidden = -1;
    for (int corner = 0; corner < 4; corner++) {
        double bx = corner & 1 ? f->left + margin : f->right - bw - margin;
        double by = corner & 2 ? f->bottom - bh - margin : f->top + margin;
        /* points, and samples along the segments between them, that the box would cover */
        long hidden = 0;
        for (int s = 0; s < p->nseries; s++) {
            const PlotSeries *ser = &p->series[s];
            for (int i = 0; i < ser->n; i++) {
                if (!point_ok(ser, i)) continue;
                int segment = i + 1 < ser->n && point_ok(ser, i + 1);
                for (int t = 0; t < (segment ? 16 : 1); t++) {
                    double u = t / 16.0;
                    double x = segment ? ser->x[i] + u * (ser->x[i + 1] - ser->x[i]) : ser->x[i];
                    double y = segment ? ser->y[i] + u * (ser->y[i + 1] - ser->y[i]) : ser->y[i];
                    double px = to_px(f, x), py = to_py(f, y);
                    if (px >= bx - 4 && px <= bx + bw + 4 && py >= by - 4 && py <= by + bh + 4) hidden++;
                }
            }
        }
        if (best_hidden < 0 || hidden < best_hidden) best_hidden = hidden, best_x = bx, best_y = by;
    }
    cairo_rectangle(cr, best_x, best_y, bw, bh);
    cairo_set_source_rgba(cr, 1, 1, 1, 0.88);
    cairo_fill_preserve(cr);
    cairo_set_source_rgb(cr, 0.75, 0.75, 0.75);
    cairo_set_line_width(cr, 1);
    cairo_stroke(cr);
    double y = best_y + 4 + line_h / 2;
    for (int s = 0; s < p->nseries; s++) {
        const PlotSeries *ser = &p->series[s];
        if (!has_text(ser->label)) continue;
        set_color(cr, series_color(ser, s));
        cairo_set_line_width(cr, 2);
        cairo_move_to(cr, best_x + 6, y);
        cairo_line_to(cr, best_x + 28, y);
        cairo_stroke(cr);
        if (ser->markers) {
            cairo_arc(cr, best_x + 17, y, 3, 0, 2 * M_PI);
            cairo_fill(cr);
        }
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        draw_text(cr, ser->label, best_x + 34, y, 0, 0.5);
        y += line_h;
    }
}

typedef struct DataRange {
    double xmin, xmax, ymin, ymax;
} DataRange;

/* The range of the points with both coordinates finite, x widened to the panel's finite
 * x_min and x_max.  Returns 1, with [0, 1] x [0, 1], when there is no such point. */
static int data_range(const PlotPanel *p, DataRange *r) {
    *r = (DataRange){INFINITY, -INFINITY, INFINITY, -INFINITY};
    for (int s = 0; s < p->nseries; s++) {
        const PlotSeries *ser = &p->series[s];
        for (int i = 0; i < ser->n; i++) {
            if (!point_ok(ser, i)) continue;
            r->xmin = fmin(r->xmin, ser->x[i]), r->xmax = fmax(r->xmax, ser->x[i]);
            r->ymin = fmin(r->ymin, ser->y[i]), r->ymax = fmax(r->ymax, ser->y[i]);
        }
    }
    if (!(r->xmin <= r->xmax)) {
        *r = (DataRange){0, 1, 0, 1};
        return 1;
    }
    if (isfinite(p->x_min)) r->xmin = fmin(r->xmin, p->x_min);
    if (isfinite(p->x_max)) r->xmax = fmax(r->xmax, p->x_max);
    return 0;
}

/* The number of steps between an axis's first and last tick. */
static int tick_steps(const Axis *a) { return (int)floor((a->hi - a->lo) / a->step + 0.5); }

/* The axes over r of a panel drawn at (x0, y0) in w x h, and the plot area they leave:
 * margins for the title and the axis labels, and on the left for the widest y tick label
 * (an empty panel measures them too, though it draws none). */
static Frame layout_frame(cairo_t *cr, const PlotPanel *p, const DataRange *r, double x0, double y0, double w,
                          double h) {
    Frame f;
    f.x = make_axis(r->xmin, r->xmax, w > 420 ? 7 : 5, p->x_integer);
    f.y = make_axis(r->ymin, r->ymax, h > 320 ? 6 : 4, 0);
    char buf[64];
    set_font(cr, TICK_SIZE, 0);
    double tick_w = 0;
    for (int i = 0; i <= tick_steps(&f.y); i++) {
        format_tick(buf, sizeof buf, f.y.lo + i * f.y.step, f.y.step);
        tick_w = fmax(tick_w, text_width(cr, buf));
    }
    f.top = y0 + (has_text(p->title) ? 30 : 10);
    f.bottom = y0 + h - (has_text(p->xlabel) ? 44 : 24);
    f.left = x0 + (has_text(p->ylabel) ? 26 : 6) + tick_w + 8;
    f.right = x0 + w - 18;
    return f;
}

/* A grid line across the frame at each tick of one axis (x_axis: vertical lines) and the
 * tick's label: under the frame for x, left of it for y.  Line width and font are set. */
static void draw_ticks(cairo_t *cr, const Frame *f, int x_axis) {
    const Axis *a = x_axis ? &f->x : &f->y;
    char buf[64];
    for (int i = 0; i <= tick_steps(a); i++) {
        double v = a->lo + i * a->step, at = floor(x_axis ? to_px(f, v) : to_py(f, v)) + 0.5;
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_move_to(cr, x_axis ? at : f->left, x_axis ? f->top : at);
        cairo_line_to(cr, x_axis ? at : f->right, x_axis ? f->bottom : at);
        cairo_stroke(cr);
        format_tick(buf, sizeof buf, v, a->step);
        cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
        if (x_axis) draw_text(cr, buf, at, f->bottom + 5, 0.5, 0);
        else draw_text(cr, buf, f->left - 6, at, 1, 0.5);
    }
}

/* The title, the grid lines with their tick labels (an empty panel has no scale to show)
 * and the axis labels of a panel drawn at (x0, y0), h high. */
static void draw_guides(cairo_t *cr, const PlotPanel *p, const Frame *f, int empty, double x0, double y0, double h) {
    if (has_text(p->title)) {
        set_font(cr, TITLE_SIZE - 1, 1);
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        draw_text(cr, p->title, (f->left + f->right) / 2, y0 + 8, 0.5, 0);
    }
    cairo_set_line_width(cr, 1);
    set_font(cr, TICK_SIZE, 0);
    if (!empty) {
        draw_ticks(cr, f, 0);
        draw_ticks(cr, f, 1);
    }
    set_font(cr, LABEL_SIZE, 0);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    if (has_text(p->xlabel)) draw_text(cr, p->xlabel, (f->left + f->right) / 2, y0 + h - 6, 0.5, 1);
    if (has_text(p->ylabel)) {
        cairo_save(cr);
        cairo_translate(cr, x0 + 4, (f->top + f->bottom) / 2);
        cairo_rotate(cr, -M_PI / 2);
        draw_text(cr, p->ylabel, 0, 0, 0.5, 0);
        cairo_restore(cr);
    }
}

/* One series in its colour: a line through its finite points, lifted at each other one,
 * and a dot on each point when it asks for markers or has a single point. */
static void draw_one_series(cairo_t *cr, const Frame *f, const PlotSeries *ser, uint32_t color) {
    set_color(cr, color);
    cairo_set_line_width(cr, 2);
    int pen_down = 0;
    for (int i = 0; i < ser->n; i++) {
        if (!point_ok(ser, i)) {
            pen_down = 0;
            continue;
        }
        double px = to_px(f, ser->x[i]), py = to_py(f, ser->y[i]);
        if (pen_down) cairo_line_to(cr, px, py);
        else cairo_move_to(cr, px, py);
        pen_down = 1;
    }
    cairo_stroke(cr);
    for (int i = 0; i < ser->n; i++) {
        if (!point_ok(ser, i) || !(ser->markers || ser->n == 1)) continue;
        cairo_arc(cr, to_px(f, ser->x[i]), to_py(f, ser->y[i]), 3.5, 0, 2 * M_PI);
        cairo_fill(cr);
    }
}

/* Every series of the panel, clipped to the frame. */
static void draw_series(cairo_t *cr, const PlotPanel *p, const Frame *f) {
    cairo_save(cr);
    cairo_rectangle(cr, f->left, f->top, f->right - f->left, f->bottom - f->top);
    cairo_clip(cr);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
    for (int s = 0; s < p->nseries; s++) draw_one_series(cr, f, &p->series[s], series_color(&p->series[s], s));
    cairo_restore(cr);
}

/* The frame, on top of the lines' ends, then the legend, or an empty panel's text. */
static void draw_frame(cairo_t *cr, const PlotPanel *p, const Frame *f, int empty) {
    cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, floor(f->left) + 0.5, floor(f->top) + 0.5, floor(f->right - f->left),
                    floor(f->bottom - f->top));
    cairo_stroke(cr);
    if (!empty) {
        draw_legend(cr, p, f);
    } else if (has_text(p->empty_text)) {
        set_font(cr, LABEL_SIZE, 0);
        cairo_set_source_rgb(cr, 0.45, 0.45, 0.45);
        draw_text(cr, p->empty_text, (f->left + f->right) / 2, (f->top + f->bottom) / 2, 0.5, 0.5);
    }
}

/* One line-chart panel in the w x h box at (x0, y0). */
static void draw_panel(cairo_t *cr, const PlotPanel *p, double x0, double y0, double w, double h) {
    DataRange range;
    int empty = data_range(p, &range);
    Frame f = layout_frame(cr, p, &range, x0, y0, w, h);
    draw_guides(cr, p, &f, empty, x0, y0, h);
    draw_series(cr, p, &f);
    draw_frame(cr, p, &f, empty);
}

/* ------------------------------------------------------------------ surfaces */

static int check_cairo(cairo_t *cr, const char *what) {
    cairo_status_t st = cairo_status(cr);
    if (st != CAIRO_STATUS_SUCCESS) return moco_error("%s: cairo failed: %s", what, cairo_status_to_string(st));
    return 0;
}

/* out = the surface's pixels as RGB. */
static int surface_to_image(cairo_surface_t *surface, Image *out) {
    cairo_surface_flush(surface);
    int w = cairo_image_surface_get_width(surface), h = cairo_image_surface_get_height(surface);
    int stride = cairo_image_surface_get_stride(surface);
    const unsigned char *data = cairo_image_surface_get_data(surface);
    Image img = {0};
    if (image_alloc(&img, w, h, 3)) return -1;
    for (int y = 0; y < h; y++) {
        const uint32_t *row = (const uint32_t *)(data + (size_t)y * (size_t)stride);
        uint8_t *dst = img.data + (size_t)y * (size_t)w * 3;
        for (int x = 0; x < w; x++) {
            uint32_t p = row[x]; /* opaque, so premultiplication changes nothing */
            dst[3 * x] = (uint8_t)(p >> 16), dst[3 * x + 1] = (uint8_t)(p >> 8), dst[3 * x + 2] = (uint8_t)p;
        }
    }
    *out = img;
    return 0;
}

static int check_side(const char *fn, const char *what, int v, int lo) {
    if (v < lo || v > PLOT_MAX_SIDE) return moco_error("%s: %s %d is outside [%d, %d]", fn, what, v, lo, PLOT_MAX_SIDE);
    return 0;
}

int plot_figure(Image *out, int width, int height, int rows, int cols, const char *title, const PlotPanel *panels,
                int npanels) {
    const char *fn = "plot_figure";
    if (check_side(fn, "width", width, 64) || check_side(fn, "height", height, 64)) return -1;
    if (rows < 1 || cols < 1 || rows > PLOT_MAX_PANELS || cols > PLOT_MAX_PANELS)
        return moco_error("%s: rows %d and cols %d must be in [1, %d]", fn, rows, cols, PLOT_MAX_PANELS);
    if (npanels < 0 || npanels > rows * cols || npanels > PLOT_MAX_PANELS)
        return moco_error("%s: %d panels do not fit a %d x %d grid (at most %d panels)", fn, npanels, rows, cols,
                          PLOT_MAX_PANELS);
    for (int i = 0; i < npanels; i++) {
        const PlotPanel *p = &panels[i];
        if (p->nseries < 0 || p->nseries > PLOT_MAX_SERIES)
            return moco_error("%s: panel %d has %d series (at most %d)", fn, i + 1, p->nseries, PLOT_MAX_SERIES);
        for (int s = 0; s < p->nseries; s++) {
            const PlotSeries *ser = &p->series[s];
            if (ser->n < 0 || (ser->n > 0 && (!ser->x || !ser->y)))
                return moco_error("%s: panel %d, series %d: %d points without coordinates", fn, i + 1, s + 1, ser->n);
        }
    }
    cairo_surface_t *surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height);
    cairo_t *cr = cairo_create(surface);
    int rc = check_cairo(cr, fn);
    if (rc == 0) {
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_paint(cr);
        double top = 0;
        if (has_text(title)) {
            set_font(cr, TITLE_SIZE + 2, 1);
            cairo_set_source_rgb(cr, 0.05, 0.05, 0.05);
            draw_text(cr, title, width / 2.0, 10, 0.5, 0);
            top = 36;
        }
        double cw = (double)width / cols, ch = (height - top) / rows;
        for (int i = 0; i < npanels; i++)
            draw_panel(cr, &panels[i], (i % cols) * cw + 6, top + (i / cols) * ch + 4, cw - 12, ch - 8);
        rc = check_cairo(cr, fn);
    }
    if (rc == 0) rc = surface_to_image(surface, out);
    cairo_destroy(cr);
    cairo_surface_destroy(surface);
    return rc;
}

/* ------------------------------------------------------------------ tile grids */

/* A cairo surface holding img's pixels (gray replicated to RGB); NULL on failure. */
static cairo_surface_t *image_surface(const Image *img) {
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, img->width, img->height);
    if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(s);
        return NULL;
    }
    cairo_surface_flush(s);
    unsigned char *data = cairo_image_surface_get_data(s);
    int stride = cairo_image_surface_get_stride(s);
    for (int y = 0; y < img->height; y++) {
        uint32_t *row = (uint32_t *)(data + (size_t)y * (size_t)stride);
        const uint8_t *src = img->data + (size_t)y * (size_t)img->width * (size_t)img->channels;
        for (int x = 0; x < img->width; x++) {
            const uint8_t *px = src + (size_t)x * (size_t)img->channels;
            uint32_t r = px[0], g = img->channels == 3 ? px[1] : px[0], b = img->channels == 3 ? px[2] : px[0];
            row[x] = r << 16 | g << 8 | b;
        }
    }
    cairo_surface_mark_dirty(s);
    return s;
}

/* Shrinks the current font until s fits in width (down to 7 px). */
static void fit_font(cairo_t *cr, const char *s, double width, double size, int bold) {
    set_font(cr, size, bold);
    while (size > 7 && text_width(cr, s) > width) {
        size -= 0.5;
        set_font(cr, size, bold);
    }
}

int plot_tile_grid(Image *out, const PlotTileGrid *g) {
    const char *fn = "plot_tile_grid";
    if (g->n < 1 || g->cols < 1 || g->cols > 4096) return moco_error("%s: %d tiles in %d columns", fn, g->n, g->cols);
    if (g->scale < 1 || g->scale > 32) return moco_error("%s: scale %d is outside [1, 32]", fn, g->scale);
    if (g->border < 0 || g->border > 32) return moco_error("%s: border %d is outside [0, 32]", fn, g->border);
    if (g->first_column_gap < 0 || g->first_column_gap > 1000)
        return moco_error("%s: first_column_gap %d is outside [0, 1000]", fn, g->first_column_gap);
    if (g->nheaders < 0 || (g->nheaders > 0 && !g->headers)) return moco_error("%s: bad headers", fn);
    int maxw = 1, maxh = 1, captions = 0;
    for (int i = 0; i < g->n; i++) {
        const Image *img = g->tiles[i].image;
        if (has_text(g->tiles[i].caption)) captions = 1;
        if (!img) continue;
        if (!img->data || (img->channels != 1 && img->channels != 3) || img->width < 1 || img->height < 1)
            return moco_error("%s: tile %d is not a gray or RGB image", fn, i + 1);
        if (img->width > maxw) maxw = img->width;
        if (img->height > maxh) maxh = img->height;
    }
    int headers = 0;
    for (int i = 0; i < g->nheaders; i++) headers |= has_text(g->headers[i]);
    int rows = (g->n + g->cols - 1) / g->cols;
    const int pad = 6, margin = 10;
    long cell_w = (long)maxw * g->scale + 2L * g->border, cell_h = (long)maxh * g->scale + 2L * g->border;
    long caption_h = captions ? 18 : 0, header_h = headers ? 20 : 0, title_h = has_text(g->title) ? 30 : 0;
    long width = 2L * margin + g->cols * cell_w + (g->cols - 1L) * pad + (g->cols > 1 ? g->first_column_gap : 0);
    long height = 2L * margin + title_h + header_h + rows * (cell_h + caption_h) + (rows - 1L) * pad;
    if (has_text(g->title)) {
        /* the picture is at least as wide as its title */
        cairo_surface_t *probe = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1);
        cairo_t *pc = cairo_create(probe);
        set_font(pc, TITLE_SIZE, 1);
        long tw = (long)ceil(text_width(pc, g->title)) + 2L * margin;
        cairo_destroy(pc);
        cairo_surface_destroy(probe);
        if (tw > width) width = tw;
    }
    if (width > PLOT_MAX_SIDE || height > PLOT_MAX_SIDE)
        return moco_error("%s: the grid would be %ld x %ld pixels (at most %d a side): fewer tiles or a smaller scale",
                          fn, width, height, PLOT_MAX_SIDE);

    cairo_surface_t *surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)width, (int)height);
    cairo_t *cr = cairo_create(surface);
    int rc = check_cairo(cr, fn);
    if (rc == 0) {
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_paint(cr);
        double y = margin;
        if (has_text(g->title)) {
            set_font(cr, TITLE_SIZE, 1);
            cairo_set_source_rgb(cr, 0.05, 0.05, 0.05);
            draw_text(cr, g->title, width / 2.0, y, 0.5, 0);
            y += title_h;
        }
        double grid_top = y + header_h;
        for (int c = 0; c < g->cols && c < g->nheaders; c++) {
            if (!has_text(g->headers[c])) continue;
            double cx = margin + c * (cell_w + pad) + (c > 0 ? g->first_column_gap : 0) + cell_w / 2.0;
            fit_font(cr, g->headers[c], (double)cell_w + pad, LABEL_SIZE, 1);
            cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
            draw_text(cr, g->headers[c], cx, grid_top - 4, 0.5, 1);
        }
        for (int i = 0; i < g->n && rc == 0; i++) {
            const PlotTile *t = &g->tiles[i];
            int r = i / g->cols, c = i % g->cols;
            double cx = margin + c * (cell_w + pad) + (c > 0 ? g->first_column_gap : 0);
            double cy = grid_top + r * (cell_h + caption_h + pad);
            if (t->image) {
                set_color(cr, t->border);
                cairo_rectangle(cr, cx, cy, (double)cell_w, (double)cell_h);
                cairo_fill(cr);
                cairo_surface_t *tile = image_surface(t->image);
                if (!tile) {
                    rc = moco_error("%s: cannot make a surface for tile %d", fn, i + 1);
                    break;
                }
                double iw = (double)t->image->width * g->scale, ih = (double)t->image->height * g->scale;
                cairo_save(cr);
                cairo_translate(cr, cx + (cell_w - iw) / 2, cy + (cell_h - ih) / 2);
                cairo_scale(cr, g->scale, g->scale);
                cairo_set_source_surface(cr, tile, 0, 0);
                /* enlarged pixels stay sharp squares rather than a blur */
                cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_NEAREST);
                cairo_rectangle(cr, 0, 0, t->image->width, t->image->height);
                cairo_fill(cr);
                cairo_restore(cr);
                cairo_surface_destroy(tile);
            }
            if (has_text(t->caption)) {
                fit_font(cr, t->caption, (double)cell_w + pad - 2, TICK_SIZE, 0);
                cairo_set_source_rgb(cr, 0.15, 0.15, 0.15);
                draw_text(cr, t->caption, cx + cell_w / 2.0, cy + cell_h + 3, 0.5, 0);
            }
        }
        if (rc == 0) rc = check_cairo(cr, fn);
    }
    if (rc == 0) rc = surface_to_image(surface, out);
    cairo_destroy(cr);
    cairo_surface_destroy(surface);
    return rc;
}
