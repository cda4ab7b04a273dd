#!/bin/sh
# NML beside PyTorch, one table (bench/README.md): bench/run.sh [--quick] [--threads N] [--repeat R]
exec /usr/bin/python3 "$(dirname "$0")/run.py" "$@"
