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
static int nerrors;
static FILE *stream;

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
	fprintf(f, "  %.*s\n  ", len, p);
	for (int c = 1; c < loc.col && c <= len; c++)
		fputc(p[c - 1] == '\t' ? '\t' : ' ', f);
	fputs("^\n", f);
}

static void report(const char *kind, SrcLoc loc, const char *fmt, va_list ap)
{
	FILE *f = stream ? stream : stderr;
	if (loc.file)
		fprintf(f, "%s:%d:%d: ", loc.file, loc.line, loc.col);
	else
		fputs("nmlc: ", f);
	fprintf(f, "%s: ", kind);
	vfprintf(f, fmt, ap);
	fputc('\n', f);
	if (loc.file)
		quote_line(f, loc);
}

void diag_error(SrcLoc loc, const char *fmt, ...)
{
	if (nerrors >= DIAG_MAX_ERRORS) {
		nerrors++;
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	report("error", loc, fmt, ap);
	va_end(ap);
	if (++nerrors == DIAG_MAX_ERRORS)
		fprintf(stream ? stream : stderr, "nmlc: too many errors, stopping\n");
}

void diag_note(SrcLoc loc, const char *fmt, ...)
{
	if (nerrors > DIAG_MAX_ERRORS)
		return;
	va_list ap;
	va_start(ap, fmt);
	report("note", loc, fmt, ap);
	va_end(ap);
}

int diag_count(void) { return nerrors; }
int diag_full(void) { return nerrors >= DIAG_MAX_ERRORS; }
void diag_reset(void) { nerrors = 0; }
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
