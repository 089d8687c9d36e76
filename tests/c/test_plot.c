/* tests/c/test_plot.c: the cairo pictures of core/plot.h.
 *
 * Layout arithmetic (picture sizes), exact pixels where the drawing is exact (background,
 * borders, nearest-neighbour enlarged tiles), a series colour present on the canvas, and
 * invalid arguments rejected with a message before anything is drawn. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "plot.h"

static const uint8_t *pixel(const Image *img, int x, int y) {
    return img->data + ((size_t)y * (size_t)img->width + (size_t)x) * 3;
}

static int has_color(const Image *img, uint32_t c) {
    for (int y = 0; y < img->height; y++)
        for (int x = 0; x < img->width; x++) {
            const uint8_t *p = pixel(img, x, y);
            if (p[0] == (c >> 16 & 255) && p[1] == (c >> 8 & 255) && p[2] == (c & 255)) return 1;
        }
    return 0;
}

static void test_figure(void) {
    double x[] = {0, 1, 2, 3}, y[] = {4.0, 2.5, 2.0, 1.2}, y2[] = {NAN, 3, NAN, 1};
    PlotSeries series[2] = {
        {.label = "loss", .x = x, .y = y, .n = 4, .color = 0x1f77b4, .markers = 0},
        {.label = "gappy", .x = x, .y = y2, .n = 4, .color = 0xd62728, .markers = 1},
    };
    PlotPanel panels[2] = {
        {.title = "a", .xlabel = "epoch", .ylabel = "loss", .series = series, .nseries = 2, .x_integer = 1,
         .x_min = NAN, .x_max = NAN},
        {.title = "empty", .series = NULL, .nseries = 0, .x_min = NAN, .x_max = NAN, .empty_text = "nothing"},
    };
    Image img = {0};
    int rc = plot_figure(&img, 640, 300, 1, 2, "title", panels, 2);
    CHECK("plot_figure renders", rc == 0, "%s", moco_last_error());
    if (rc) return;
    CHECK("plot_figure: the requested size, RGB", img.width == 640 && img.height == 300 && img.channels == 3,
          "got %dx%dx%d", img.width, img.height, img.channels);
    const uint8_t *corner = pixel(&img, 0, 0);
    CHECK("plot_figure: white background", corner[0] == 255 && corner[1] == 255 && corner[2] == 255, "got %d,%d,%d",
          corner[0], corner[1], corner[2]);
    CHECK("plot_figure: the first series is drawn in its colour", has_color(&img, 0x1f77b4), "colour absent");
    CHECK("plot_figure: a series with gaps still draws its markers", has_color(&img, 0xd62728), "colour absent");
    image_free(&img);
}

static void test_figure_errors(void) {
    Image img = {0};
    PlotPanel panel = {.x_min = NAN, .x_max = NAN};
    CHECK("plot_figure: width below 64 is an error", plot_figure(&img, 10, 100, 1, 1, NULL, &panel, 1) == -1 &&
          strstr(moco_last_error(), "width"), "%s", moco_last_error());
    CHECK("plot_figure: more panels than cells is an error", plot_figure(&img, 100, 100, 1, 1, NULL, &panel, 2) == -1 &&
          strstr(moco_last_error(), "do not fit"), "%s", moco_last_error());
    PlotSeries bad = {.label = "x", .x = NULL, .y = NULL, .n = 3, .color = PLOT_COLOR_AUTO};
    PlotPanel with_bad = {.series = &bad, .nseries = 1, .x_min = NAN, .x_max = NAN};
    CHECK("plot_figure: points without coordinates are an error",
          plot_figure(&img, 100, 100, 1, 1, NULL, &with_bad, 1) == -1 && strstr(moco_last_error(), "coordinates"), "%s",
          moco_last_error());
    CHECK("plot_figure: nothing allocated on error", img.data == NULL, "image data set");
}

static void test_tile_grid(void) {
    uint8_t gray[4] = {0, 100, 200, 255};                 /* 2x2 gray */
    uint8_t rgb[12] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 1, 2, 3}; /* 2x2 RGB */
    Image a = {gray, 2, 2, 1}, b = {rgb, 2, 2, 3};
    PlotTile tiles[2] = {{&a, 0x00ff00, NULL}, {&b, 0xff0000, NULL}};
    PlotTileGrid g = {.tiles = tiles, .n = 2, .cols = 2, .scale = 4, .border = 2};
    Image img = {0};
    int rc = plot_tile_grid(&img, &g);
    CHECK("plot_tile_grid renders", rc == 0, "%s", moco_last_error());
    if (rc) return;
    /* margin 10, cells of 2 * 4 + 2 * 2 = 12 pixels, 6 between them */
    CHECK("plot_tile_grid: size from the layout", img.width == 2 * 10 + 2 * 12 + 6 && img.height == 2 * 10 + 12,
          "got %dx%d", img.width, img.height);
    const uint8_t *p = pixel(&img, 10, 10);
    CHECK("plot_tile_grid: first tile's border colour", p[0] == 0 && p[1] == 255 && p[2] == 0, "got %d,%d,%d", p[0], p[1],
          p[2]);
    /* tile 1 pixel (1, 0) = 100, enlarged 4x: image x 4..7 of the tile, y 0..3 */
    p = pixel(&img, 10 + 2 + 5, 10 + 2 + 1);
    CHECK("plot_tile_grid: gray pixels enlarged exactly", p[0] == 100 && p[1] == 100 && p[2] == 100, "got %d,%d,%d", p[0],
          p[1], p[2]);
    p = pixel(&img, 10 + 12 + 6 + 2 + 1, 10 + 2 + 6);
    CHECK("plot_tile_grid: RGB pixels enlarged exactly", p[0] == 70 && p[1] == 80 && p[2] == 90, "got %d,%d,%d", p[0],
          p[1], p[2]);
    p = pixel(&img, 10 + 12 + 6, 10 + 11);
    CHECK("plot_tile_grid: second tile's border colour", p[0] == 255 && p[1] == 0 && p[2] == 0, "got %d,%d,%d", p[0],
          p[1], p[2]);
    image_free(&img);

    g.scale = 0;
    CHECK("plot_tile_grid: scale 0 is an error", plot_tile_grid(&img, &g) == -1 && strstr(moco_last_error(), "scale"),
          "%s", moco_last_error());
    g.scale = 1;
    Image broken = {gray, 2, 2, 2};
    tiles[0].image = &broken;
    CHECK("plot_tile_grid: a 2-channel image is an error", plot_tile_grid(&img, &g) == -1, "accepted");
}

int main(void) {
    test_figure();
    test_figure_errors();
    test_tile_grid();
    CHECK_DONE();
}
