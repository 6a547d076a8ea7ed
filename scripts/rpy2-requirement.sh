#!/usr/bin/env bash
# Prints the pinned rpy2 requirement that works with the R on PATH: rpy2 3.6 needs
# R >= 4.3 (against R 4.2 it fails at import with "undefined symbol: R_getVar").
set -euo pipefail
ver=$(Rscript -e 'cat(as.character(getRversion()))')
major=${ver%%.*}; rest=${ver#*.}; minor=${rest%%.*}
if [ "$major" -gt 4 ] || { [ "$major" -eq 4 ] && [ "$minor" -ge 3 ]; }; then
    echo "rpy2>=3.6,<3.7"
else
    echo "rpy2==3.5.17"
fi
