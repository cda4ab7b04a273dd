/* plot.c: curves in the terminal and in SVG (plot.h), and `nmlc plot`. Both drawings share the
 * axes: the range of every drawable point, in log10 where the axis is logarithmic. */
#include "plot.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

enum { PLOT_MAX_SERIES = 64 };

/* ---- axes ---- */

typedef struct Range {
	double lo, hi; /* in the axis' own scale: log10 of the values on a log axis */
	int log;
} Range;

static int usable(double v, int log) { return isfinite(v) && (!log || v > 0); }

static double scaled(double v, int log) { return log ? log10(v) : v; }

/* The range of the points on both axes; 0 if there is no point to draw. */
static int ranges(const PlotSeries *s, int n, const PlotAxes *a, Range *x, Range *y)
{
	*x = (Range){INFINITY, -INFINITY, a->logx};
	*y = (Range){INFINITY, -INFINITY, a->logy};
	int any = 0;
	for (int k = 0; k < n; k++)
		for (int i = 0; i < s[k].n; i++) {
			if (!usable(s[k].x[i], a->logx) || !usable(s[k].y[i], a->logy))
				continue;
			double u = scaled(s[k].x[i], a->logx), v = scaled(s[k].y[i], a->logy);
			x->lo = fmin(x->lo, u), x->hi = fmax(x->hi, u);
			y->lo = fmin(y->lo, v), y->hi = fmax(y->hi, v);
			any = 1;
		}
	if (!any)
		return 0;
	Range *r[2] = {x, y};
	for (int i = 0; i < 2; i++)
		if (r[i]->hi - r[i]->lo < 1e-12 * fmax(1, fabs(r[i]->hi))) { /* one value: a band around it */
			double pad = r[i]->log ? 0.5 : fmax(fabs(r[i]->lo) * 0.1, 0.5);
			r[i]->lo -= pad, r[i]->hi += pad;
		}
	return 1;
}

/* Tick values (in the axis' scale): powers of ten on a log axis spanning a decade or more, else
 * 1, 2 or 5 times a power of ten apart. */
static int ticks(const Range *r, double *t, int max)
{
	int n = 0;
	if (r->log && r->hi - r->lo >= 1) {
		double step = ceil((r->hi - r->lo) / (max - 1));
		for (double v = ceil(r->lo); v <= r->hi + 1e-9 && n < max; v += step)
			t[n++] = v;
		return n;
	}
	double lo = r->log ? pow(10, r->lo) : r->lo, hi = r->log ? pow(10, r->hi) : r->hi;
	double raw = (hi - lo) / 5, mag = pow(10, floor(log10(raw))), step = mag;
	if (raw / mag > 5)
		step = 10 * mag;
	else if (raw / mag > 2)
		step = 5 * mag;
	else if (raw / mag > 1)
		step = 2 * mag;
	for (double v = ceil(lo / step) * step; v <= hi + step * 1e-9 && n < max; v += step)
		t[n++] = r->log ? log10(v) : (fabs(v) < step * 1e-9 ? 0 : v);
	return n;
}

static void tick_label(char *b, size_t len, double v, int log)
{
	if (log)
		v = pow(10, v);
	if (log && fabs(v - pow(10, round(log10(v)))) < 1e-9 * v && (v >= 1e4 || v < 1e-2))
		snprintf(b, len, "1e%d", (int)round(log10(v)));
	else if (v == floor(v) && fabs(v) < 1e6)
		snprintf(b, len, "%.0f", v);
	else
		snprintf(b, len, "%.3g", v);
}

/* ---- the terminal ---- */

static const char *const colours[] = {"\033[32m", "\033[31m", "\033[34m", "\033[33m", "\033[35m", "\033[36m"};
static const char markers[] = "*+ox#@%&";

void plot_term(FILE *f, const PlotSeries *s, int n, const PlotAxes *a, int width, int height, int colour)
{
	Range xr, yr;
	if (a->title)
		fprintf(f, "%s\n", a->title);
	if (!ranges(s, n, a, &xr, &yr)) {
		fprintf(f, "(no points to draw)\n");
		return;
	}
	/* A canvas of dots: 2 x 4 per cell in braille, 1 per cell in plain characters. */
	int dx = colour ? 2 : 1, dy = colour ? 4 : 1, W = width * dx, H = height * dy;
	unsigned char *bits = xcalloc((size_t)width * (size_t)height, 1);
	signed char *owner = xmalloc((size_t)width * (size_t)height);
	memset(owner, -1, (size_t)width * (size_t)height);
	double *col = xmalloc((size_t)W * sizeof *col);
	int *cnt = xmalloc((size_t)W * sizeof *cnt);
	for (int k = 0; k < n; k++) {
		/* each dot column: the mean of the curve's points there */
		for (int i = 0; i < W; i++)
			col[i] = 0, cnt[i] = 0;
		for (int i = 0; i < s[k].n; i++) {
			if (!usable(s[k].x[i], a->logx) || !usable(s[k].y[i], a->logy))
				continue;
			double u = (scaled(s[k].x[i], a->logx) - xr.lo) / (xr.hi - xr.lo);
			int c = (int)lround(u * (W - 1));
			col[c] += scaled(s[k].y[i], a->logy);
			cnt[c]++;
		}
		int pc = -1, pr = -1;
		for (int c = 0; c < W; c++) {
			if (!cnt[c])
				continue;
			double v = (col[c] / cnt[c] - yr.lo) / (yr.hi - yr.lo);
			int row = (H - 1) - (int)lround(v * (H - 1));
			/* a line from the previous dot (Bresenham) */
			int x0 = pc < 0 ? c : pc, y0 = pc < 0 ? row : pr, ddx = c - x0, ddy = abs(row - y0);
			int sy = y0 < row ? 1 : -1, e = ddx - ddy;
			for (;;) {
				int cell = (y0 / dy) * width + x0 / dx;
				if (colour) {
					static const unsigned char dot[4][2] = {{0x01, 0x08}, {0x02, 0x10}, {0x04, 0x20}, {0x40, 0x80}};
					bits[cell] |= dot[y0 % 4][x0 % 2];
				}
				owner[cell] = (signed char)k;
				if (x0 == c && y0 == row)
					break;
				int e2 = 2 * e;
				if (e2 > -ddy)
					e -= ddy, x0++;
				if (e2 < ddx)
					e += ddx, y0 += sy;
			}
			pc = c, pr = row;
		}
	}
	char label[32];
	for (int row = 0; row < height; row++) {
		/* y labels on the top, middle and bottom rows */
		double v = yr.hi - (yr.hi - yr.lo) * row / (height > 1 ? height - 1 : 1);
		if (row == 0 || row == height - 1 || row == height / 2)
			tick_label(label, sizeof label, v, a->logy);
		else
			label[0] = 0;
		fprintf(f, "%10s %s", label, label[0] ? "┤" : "│");
		int last = -1;
		for (int c = 0; c < width; c++) {
			int cell = row * width + c, k = owner[cell];
			if (k < 0) {
				if (colour && last >= 0)
					fputs("\033[0m", f), last = -1;
				fputc(' ', f);
			} else if (colour) {
				if (k != last)
					fputs(colours[k % 6], f), last = k;
				unsigned b = bits[cell];
				fputc(0xe2, f);
				fputc(0xa0 | (b >> 6), f);
				fputc(0x80 | (b & 0x3f), f);
			} else {
				fputc(markers[k % 8], f);
			}
		}
		if (colour && last >= 0)
			fputs("\033[0m", f);
		fputc('\n', f);
	}
	fprintf(f, "%10s └", "");
	for (int c = 0; c < width; c++)
		fputs("─", f);
	fputc('\n', f);
	char lo[32], hi[32];
	tick_label(lo, sizeof lo, xr.lo, a->logx);
	tick_label(hi, sizeof hi, xr.hi, a->logx);
	fprintf(f, "%11s %-*s%s  %s\n", "", width - (int)strlen(hi), lo, hi, a->xlabel ? a->xlabel : "");
	fprintf(f, "%11s", "");
	for (int k = 0; k < n; k++) {
		if (colour)
			fprintf(f, " %s⣿\033[0m %s", colours[k % 6], s[k].label);
		else
			fprintf(f, " %c %s", markers[k % 8], s[k].label);
	}
	fputc('\n', f);
	free(bits);
	free(owner);
	free(col);
	free(cnt);
}

/* ---- SVG ---- */

static const char *const svg_colours[] = {"#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02",
					  "#a6761d", "#666666"};

static void xml_text(FILE *f, const char *s)
{
	for (; *s; s++)
		switch (*s) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		default:
			if ((unsigned char)*s >= 0x20 || *s == '\t')
				fputc(*s, f);
		}
}

enum { SVG_W = 760, SVG_H = 460, SVG_L = 80, SVG_R = 200, SVG_T = 40, SVG_B = 60, SVG_MAX_POINTS = 2000 };

int plot_svg(const char *path, const PlotSeries *s, int n, const PlotAxes *a, char *err, size_t errlen)
{
	Range xr, yr;
	if (!ranges(s, n, a, &xr, &yr)) {
		snprintf(err, errlen, "nothing to plot: no curve has a point%s", a->logy ? " above 0 (the y axis is logarithmic)" : "");
		return -1;
	}
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f) {
		snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
		return -1;
	}
	double pw = SVG_W - SVG_L - SVG_R, ph = SVG_H - SVG_T - SVG_B;
#define PX(u) (SVG_L + ((u) - xr.lo) / (xr.hi - xr.lo) * pw)
#define PY(v) (SVG_T + ph - ((v) - yr.lo) / (yr.hi - yr.lo) * ph)
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
		   "font-family=\"sans-serif\" font-size=\"12\">\n", SVG_W, SVG_H, SVG_W, SVG_H);
	fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", SVG_W, SVG_H);
	if (a->title) {
		fprintf(f, "<text x=\"%g\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">", SVG_L + pw / 2);
		xml_text(f, a->title);
		fputs("</text>\n", f);
	}
	double t[16];
	int nt = ticks(&xr, t, 12);
	char b[32];
	for (int i = 0; i < nt; i++) {
		double px = PX(t[i]);
		tick_label(b, sizeof b, t[i], xr.log);
		fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", px, SVG_T, px, SVG_T + ph);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", px, SVG_T + ph + 18, b);
	}
	nt = ticks(&yr, t, 12);
	for (int i = 0; i < nt; i++) {
		double py = PY(t[i]);
		tick_label(b, sizeof b, t[i], yr.log);
		fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", SVG_L, py, SVG_L + pw, py);
		fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", SVG_L - 6, py + 4, b);
	}
	fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"black\"/>\n", SVG_L, SVG_T,
		pw, ph);
	fprintf(f, "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\">", SVG_L + pw / 2, SVG_H - 16);
	xml_text(f, a->xlabel ? a->xlabel : "");
	fputs(a->logx ? " (log scale)</text>\n" : "</text>\n", f);
	fprintf(f, "<text x=\"18\" y=\"%g\" text-anchor=\"middle\" transform=\"rotate(-90 18 %g)\">", SVG_T + ph / 2,
		SVG_T + ph / 2);
	xml_text(f, a->ylabel ? a->ylabel : "");
	fputs(a->logy ? " (log scale)</text>\n" : "</text>\n", f);
	for (int k = 0; k < n; k++) {
		const char *colour = svg_colours[k % 8];
		int per = s[k].n / SVG_MAX_POINTS + 1, first = 1;
		fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" d=\"", colour);
		for (int i = 0; i < s[k].n; i += per) {
			double u = 0, v = 0;
			int m = 0;
			for (int j = i; j < i + per && j < s[k].n; j++)
				if (usable(s[k].x[j], a->logx) && usable(s[k].y[j], a->logy)) {
					u += scaled(s[k].x[j], a->logx);
					v += scaled(s[k].y[j], a->logy);
					m++;
				}
			if (!m)
				continue;
			fprintf(f, "%s%.1f %.1f", first ? "M" : " L", PX(u / m), PY(v / m));
			first = 0;
		}
		fputs("\"><title>", f);
		xml_text(f, s[k].label);
		fputs("</title></path>\n", f);
		double ly = SVG_T + 10 + 20 * k;
		fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"3\"/>\n", SVG_L + pw + 14,
			ly, SVG_L + pw + 38, ly, colour);
		fprintf(f, "<text x=\"%g\" y=\"%g\">", SVG_L + pw + 44, ly + 4);
		xml_text(f, s[k].label);
		fputs("</text>\n", f);
	}
#undef PX
#undef PY
	fputs("</svg>\n", f);
	if (ferror(f) | fclose(f) || rename(tmp, path)) {
		snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
		remove(tmp);
		return -1;
	}
	return 0;
}

/* ---- nmlc plot ---- */

typedef struct Curve {
	char *label;
	double *x, *y;
	int n, cap;
} Curve;

static void add_point(Curve *c, double x, double y)
{
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 64;
		c->x = xrealloc(c->x, (size_t)c->cap * sizeof *c->x);
		c->y = xrealloc(c->y, (size_t)c->cap * sizeof *c->y);
	}
	c->x[c->n] = x;
	c->y[c->n++] = y;
}

static char *dup_str(const char *s)
{
	char *d = xmalloc(strlen(s) + 1);
	strcpy(d, s);
	return d;
}

static int exported; /* a curve came from an export (x: steps), not a run's log (x: epochs) */

static double num_of(const cJSON *v) { return cJSON_IsNumber(v) ? v->valuedouble : NAN; }

/* The curves of one JSONL file: a run's log (one record per epoch: one curve), or the REPL's
 * export (one record per run, with the curve in arrays). 0, or 1 after an error. */
static int read_log(const char *path, const char *xkey, const char *ykey, Curve *cv, int *nc)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "nmlc: error: cannot read '%s': %s\n", path, strerror(errno));
		return 1;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int lineno = 0, start = *nc, rc = 0, log_curve = -1;
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		const char *p = line;
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (!*p)
			continue;
		const char *end = NULL;
		cJSON *o = cJSON_ParseWithLengthOpts(line, (size_t)len, &end, 0);
		if (!cJSON_IsObject(o)) {
			long col = end ? (long)(end - line) + 1 : 1;
			if (!o && cJSON_GetErrorPtr())
				col = (long)(cJSON_GetErrorPtr() - line) + 1;
			fprintf(stderr, "%s:%d:%ld: error: not a JSON object (a JSONL log has one per line)\n", path, lineno,
				col > 0 ? col : 1);
			cJSON_Delete(o);
			rc = 1;
			break;
		}
		const cJSON *ys = cJSON_GetObjectItemCaseSensitive(o, ykey);
		if (cJSON_IsArray(ys)) { /* an exported run */
			if (*nc == PLOT_MAX_SERIES) {
				fprintf(stderr, "nmlc: error: more than %d curves\n", PLOT_MAX_SERIES);
				cJSON_Delete(o);
				rc = 1;
				break;
			}
			const char *xk = xkey ? xkey : !strcmp(ykey, "test_loss") ? "test_step" : "step";
			const cJSON *xs = cJSON_GetObjectItemCaseSensitive(o, xk), *rule = cJSON_GetObjectItemCaseSensitive(o, "rule");
			const cJSON *seed = cJSON_GetObjectItemCaseSensitive(o, "seed");
			if (!cJSON_IsArray(xs) || cJSON_GetArraySize(xs) != cJSON_GetArraySize(ys)) {
				fprintf(stderr, "%s:%d: error: '%s' is not an array as long as '%s'\n", path, lineno, xk, ykey);
				cJSON_Delete(o);
				rc = 1;
				break;
			}
			char label[256];
			snprintf(label, sizeof label, "%s", cJSON_IsString(rule) ? rule->valuestring : path);
			if (cJSON_IsNumber(seed) && seed->valuedouble != 0)
				snprintf(label + strlen(label), sizeof label - strlen(label), " (seed %g)", seed->valuedouble);
			exported = 1;
			Curve *c = &cv[(*nc)++];
			*c = (Curve){.label = dup_str(label)};
			for (int i = 0; i < cJSON_GetArraySize(ys); i++)
				add_point(c, num_of(cJSON_GetArrayItem(xs, i)), num_of(cJSON_GetArrayItem(ys, i)));
		} else if (ys) { /* a record of a run's log */
			if (log_curve < 0) {
				if (*nc == PLOT_MAX_SERIES) {
					fprintf(stderr, "nmlc: error: more than %d curves\n", PLOT_MAX_SERIES);
					cJSON_Delete(o);
					rc = 1;
					break;
				}
				log_curve = (*nc)++;
				cv[log_curve] = (Curve){.label = dup_str(path)};
			}
			const cJSON *xv = cJSON_GetObjectItemCaseSensitive(o, xkey ? xkey : "epoch");
			add_point(&cv[log_curve], num_of(xv), num_of(ys));
		}
		cJSON_Delete(o);
	}
	free(line);
	fclose(f);
	if (!rc && *nc == start) {
		fprintf(stderr, "nmlc: error: %s: no record has '%s'\n", path, ykey);
		rc = 1;
	}
	return rc;
}

static int plot_usage(const char *fmt, const char *arg)
{
	fputs("nmlc: error: ", stderr);
	fprintf(stderr, fmt, arg);
	fputs("\n(run 'nmlc help plot' for its options)\n", stderr);
	return 2;
}

int plot_main(int argc, char **argv)
{
	const char *out = NULL, *xkey = NULL, *ykey = "train_loss", *files[PLOT_MAX_SERIES];
	int nfiles = 0, linear = 0, logx = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		int has = i + 1 < argc;
		if (!strcmp(a, "-o") || !strcmp(a, "--y") || !strcmp(a, "--x")) {
			if (!has)
				return plot_usage("%s needs a value", a);
			const char **dst = a[1] == 'o' ? &out : a[2] == 'y' ? &ykey : &xkey;
			*dst = argv[++i];
		} else if (!strcmp(a, "--linear")) {
			linear = 1;
		} else if (!strcmp(a, "--log-x")) {
			logx = 1;
		} else if (a[0] == '-' && a[1]) {
			return plot_usage("unknown option '%s'", a);
		} else if (nfiles == PLOT_MAX_SERIES) {
			return plot_usage("more than 64 logs, at '%s'", a);
		} else {
			files[nfiles++] = a;
		}
	}
	if (!nfiles)
		return plot_usage("nmlc plot needs a JSONL log (nmlc run --log, or :export in nmlc repl)%s", "");
	if (!out)
		return plot_usage("nmlc plot needs -o FILE.svg%s", "");
	Curve cv[PLOT_MAX_SERIES];
	int nc = 0, rc = 0;
	for (int i = 0; i < nfiles && !rc; i++)
		rc = read_log(files[i], xkey, ykey, cv, &nc);
	if (!rc) {
		PlotSeries s[PLOT_MAX_SERIES];
		int allpos = 1;
		for (int k = 0; k < nc; k++) {
			s[k] = (PlotSeries){cv[k].label, cv[k].x, cv[k].y, cv[k].n};
			for (int i = 0; i < cv[k].n; i++)
				allpos &= !isfinite(cv[k].y[i]) || cv[k].y[i] > 0;
		}
		const char *xlabel = xkey ? xkey : exported ? "step" : "epoch";
		PlotAxes ax = {.title = ykey, .xlabel = xlabel, .ylabel = ykey, .logx = logx, .logy = !linear && allpos};
		char err[512];
		if (plot_svg(out, s, nc, &ax, err, sizeof err)) {
			fprintf(stderr, "nmlc: error: %s\n", err);
			rc = 1;
		} else {
			printf("wrote %s: %d curve%s of %s\n", out, nc, nc == 1 ? "" : "s", ykey);
		}
	}
	for (int k = 0; k < nc; k++) {
		free(cv[k].label);
		free(cv[k].x);
		free(cv[k].y);
	}
	return rc;
}
