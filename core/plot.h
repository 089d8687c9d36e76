/* core/plot.h: pictures of results, drawn with cairo (the Debian package libcairo2).
 *
 * Two kinds of picture, each rendered in one call into an RGB Image (core/image/image.h)
 * that the caller saves as PNG:
 *  - plot_figure: a grid of line-chart panels (training curves), each with a frame, nice
 *    ticks with labels, light grid lines, axis labels, a title and a legend;
 *  - plot_tile_grid: images in rows (e.g. a query and its nearest neighbours), enlarged
 *    with nearest-neighbour sampling, each with a coloured border and a caption.
 * Text goes through cairo's "toy" text API (fontconfig picks a sans-serif face), so no
 * font rendering lives here.  Colours are 0xRRGGBB.  The calls are stateless: the inputs
 * are plain arrays, validated before anything is allocated. */
#ifndef MOCO_PLOT_H
#define MOCO_PLOT_H

#include <stdint.h>

#include "image/image.h"

#define PLOT_COLOR_AUTO 0xFFFFFFFFu /* the next colour of the palette (matplotlib's tab10) */
#define PLOT_MAX_SERIES 16
#define PLOT_MAX_PANELS 64
#define PLOT_MAX_SIDE 8192          /* largest width or height of a picture, in pixels */

typedef struct PlotSeries {
    const char *label;   /* legend entry; NULL or "" keeps the series out of the legend */
    const double *x, *y; /* n points in drawing order; a non-finite y leaves a gap */
    int n;
    uint32_t color;      /* 0xRRGGBB or PLOT_COLOR_AUTO */
    int markers;         /* 1: a dot on every point (sparse series, e.g. a periodic monitor) */
} PlotSeries;

typedef struct PlotPanel {
    const char *title, *xlabel, *ylabel; /* each may be NULL */
    const PlotSeries *series;
    int nseries;
    int x_integer;          /* x ticks on whole numbers only (epochs) */
    double x_min, x_max;    /* finite values widen the x range to include them (panels that
                               share an axis); NaN for the data's own range */
    const char *empty_text; /* shown in the frame when no series has a finite point */
} PlotPanel;

/* out (height, width, 3) = panels laid out row by row in a rows x cols grid, under an
 * optional figure title.  npanels <= rows * cols.  Returns 0, or -1 with the error set. */
int plot_figure(Image *out, int width, int height, int rows, int cols, const char *title,
                const PlotPanel *panels, int npanels);

typedef struct PlotTile {
    const Image *image;  /* gray or RGB; NULL leaves the cell empty */
    uint32_t border;     /* 0xRRGGBB */
    const char *caption; /* drawn under the tile; NULL for none */
} PlotTile;

typedef struct PlotTileGrid {
    const PlotTile *tiles; /* n tiles, row by row */
    int n, cols;
    int scale;             /* each image pixel becomes scale x scale pixels (1..32) */
    int border;            /* border width in pixels (0..32) */
    int first_column_gap;  /* extra space after the first column (the queries), in pixels */
    const char *title;     /* NULL for none */
    const char *const *headers; /* nheaders column headers (NULL entries allowed) */
    int nheaders;
} PlotTileGrid;

/* out = the tiles in a grid of cells as large as the largest image times scale. */
int plot_tile_grid(Image *out, const PlotTileGrid *grid);

#endif
