/* diag.h: diagnostics. file:line:col: error: message, the source line, a caret. */
#ifndef DIAG_H
#define DIAG_H

#include <stdio.h>

typedef struct SrcLoc {
	const char *file; /* interned path as given; NULL for "no location" */
	int line, col;    /* 1-based */
} SrcLoc;

/* Register a source text so that diagnostics can quote its lines. The text must outlive them. */
void diag_add_source(const char *file, const char *text);
void diag_error(SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void diag_note(SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A warning: shown (with the context notes) but not counted as an error; a repeat at the same
 * place with the same text is shown once. */
void diag_warning(SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Where the code being compiled was reached from: while a context is pushed, every error is
 * followed by a note for each, innermost first ("in l2 = Linear(128, 10)"), as a C compiler names
 * the macro expansion an error is in. The message must outlive the context. */
void diag_push_context(SrcLoc loc, const char *msg);
void diag_pop_context(void);
int diag_count(void);     /* errors reported so far */
int diag_shown(void);     /* of those, shown (a repeat at the same place is shown once) */
int diag_full(void);      /* the cap on reported errors is reached: stop compiling */
void diag_reset(void);
void diag_set_stream(FILE *f);

/* A bug in nmlc, never a user mistake. */
_Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
