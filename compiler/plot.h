/* plot.h: curves as pictures: drawn in the terminal (Unicode braille, one colour per curve, or
 * plain characters, one letter per curve), or written as an SVG file; and `nmlc plot`, which draws
 * the JSONL logs of nmlc run --log and the REPL's :export. */
#ifndef PLOT_H
#define PLOT_H

#include <stdio.h>

typedef struct PlotSeries {
	const char *label;
	const double *x, *y; /* points; those not finite (or not positive on a log axis) are left out */
	int n;
} PlotSeries;

typedef struct PlotAxes {
	const char *title, *xlabel, *ylabel;
	int logx, logy;
} PlotAxes;

/* width and height in character cells of the plotting area; colour: ANSI colours and braille, else
 * one plain character per curve. */
void plot_term(FILE *f, const PlotSeries *s, int n, const PlotAxes *a, int width, int height, int colour);
/* An SVG file, written whole or not at all: 0, or -1 with a message in err. */
int plot_svg(const char *path, const PlotSeries *s, int n, const PlotAxes *a, char *err, size_t errlen);
/* `nmlc plot LOG.jsonl... -o FILE.svg [--y KEY] [--x KEY] [--linear]`; the exit status. */
int plot_main(int argc, char **argv);

#endif
