/* diag.c: error reporting with the source line and a caret under the column. */
#include "diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum { DIAG_MAX_ERRORS = 20, DIAG_MAX_SOURCES = 64 };

static struct {
	const char *file;
	const char *text;
} sources[DIAG_MAX_SOURCES];
static int nsources;
static int nerrors, nshown;
static FILE *stream;
static SrcLoc last_loc; /* of the last error, to show a repeated one once */
enum { DIAG_MAX_CONTEXT = 64 };
static struct {
	SrcLoc loc;
	const char *msg;
} context[DIAG_MAX_CONTEXT];
static int ncontext, context_depth; /* shown, and pushed (deeper ones are not kept) */
static char last_msg[512];

void diag_add_source(const char *file, const char *text)
{
	for (int i = 0; i < nsources; i++)
		if (sources[i].file == file) {
			sources[i].text = text;
			return;
		}
	if (nsources < DIAG_MAX_SOURCES)
		sources[nsources++] = (typeof(sources[0])){file, text};
}

static void quote_line(FILE *f, SrcLoc loc)
{
	const char *text = NULL;
	for (int i = 0; i < nsources; i++)
		if (sources[i].file == loc.file)
			text = sources[i].text;
	if (!text || loc.line < 1)
		return;
	const char *p = text;
	for (int l = 1; l < loc.line && *p; p++)
		if (*p == '\n')
			l++;
	const char *end = strchr(p, '\n');
	int len = end ? (int)(end - p) : (int)strlen(p);
	/* A long line is shown as a window of WINDOW columns around the caret, "..." marking what
	 * is left out. */
	enum { WINDOW = 120 };
	int from = 0, to = len;
	if (len > WINDOW) {
		from = loc.col - 1 - WINDOW / 2;
		if (from > len - WINDOW)
			from = len - WINDOW;
		if (from < 0)
			from = 0;
		to = from + WINDOW;
	}
	const char *pre = from > 0 ? "..." : "", *post = to < len ? "..." : "";
	fprintf(f, "  %s%.*s%s\n  %*s", pre, to - from, p + from, post, (int)strlen(pre), "");
	for (int c = from + 1; c < loc.col && c <= to; c++)
		fputc(p[c - 1] == '\t' ? '\t' : ' ', f);
	fputs("^\n", f);
}

static void report_text(const char *kind, SrcLoc loc, const char *msg)
{
	FILE *f = stream ? stream : stderr;
	if (loc.file)
		fprintf(f, "%s:%d:%d: ", loc.file, loc.line, loc.col);
	else
		fputs("nmlc: ", f);
	fprintf(f, "%s: %s\n", kind, msg);
	if (loc.file)
		quote_line(f, loc);
}

void diag_error(SrcLoc loc, const char *fmt, ...)
{
	if (nerrors >= DIAG_MAX_ERRORS) {
		nerrors++;
		return;
	}
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	/* The same error at the same place is shown once (a rule applied to every parameter repeats
	 * it), but counted each time, so a phase still sees that it failed. */
	if (!(loc.file == last_loc.file && loc.line == last_loc.line && loc.col == last_loc.col
	      && !strcmp(msg, last_msg))) {
		report_text("error", loc, msg);
		nshown++;
		for (int i = ncontext - 1; i >= 0; i--)
			report_text("note", context[i].loc, context[i].msg);
	}
	last_loc = loc;
	memcpy(last_msg, msg, sizeof last_msg);
	if (++nerrors == DIAG_MAX_ERRORS)
		fprintf(stream ? stream : stderr, "nmlc: too many errors, stopping\n");
}

void diag_warning(SrcLoc loc, const char *fmt, ...)
{
	static SrcLoc last;
	static char last_text[512];
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (loc.file == last.file && loc.line == last.line && loc.col == last.col && !strcmp(msg, last_text))
		return;
	last = loc;
	memcpy(last_text, msg, sizeof last_text);
	report_text("warning", loc, msg);
	for (int i = ncontext - 1; i >= 0; i--)
		report_text("note", context[i].loc, context[i].msg);
}

void diag_note(SrcLoc loc, const char *fmt, ...)
{
	if (nerrors > DIAG_MAX_ERRORS)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	report_text("note", loc, msg);
}

void diag_push_context(SrcLoc loc, const char *msg)
{
	if (context_depth++ < DIAG_MAX_CONTEXT)
		context[ncontext++] = (typeof(context[0])){loc, msg};
}

void diag_pop_context(void)
{
	if (context_depth > 0 && context_depth-- <= DIAG_MAX_CONTEXT)
		ncontext--;
}

int diag_count(void) { return nerrors; }
int diag_shown(void) { return nshown; }
int diag_full(void) { return nerrors >= DIAG_MAX_ERRORS; }
void diag_reset(void)
{
	nerrors = nshown = 0;
	last_loc = (SrcLoc){0};
	last_msg[0] = 0;
	ncontext = context_depth = 0;
}
void diag_set_stream(FILE *f) { stream = f; }

_Noreturn void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("nmlc: internal error: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}
