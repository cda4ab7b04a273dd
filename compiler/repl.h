/* repl.h: `nmlc repl`, an interactive session over one program (docs/repl.md). */
#ifndef REPL_H
#define REPL_H

#include "session.h"

/* Runs a session: o->file (or NULL) is loaded first; the other options of `nmlc run` are the
 * defaults of every :run. Returns the exit status. */
int repl_main(const Options *o);

#endif
