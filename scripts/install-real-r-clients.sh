#!/usr/bin/env bash
# Install the REAL DataSHIELD R clients (DSI, DSMolgenisArmadillo + MolgenisAuth, DSOpal +
# opalr, dsBaseClient) into an R library OUTSIDE this repository, for the opt-in tests
# (tests/functional/test_real_r_clients.py) and for trying the gateway from R.
# Nothing of them is, or may be, in this repository.
#
#   scripts/install-real-r-clients.sh [--lib DIR]                 # from CRAN / r-universe
#   scripts/install-real-r-clients.sh [--lib DIR] --from SRC [--relax] [--offline]
#
#   --lib DIR   the library (default $DSGATEWAY_REAL_R_LIB, else
#               ~/.local/share/dsgateway/real-rlib)
#   --from SRC  a directory of package sources you fetched yourself (git checkouts or
#               .tar.gz): DSI*, MolgenisAuth*, DSMolgenisArmadillo*, opalr*, DSOpal*,
#               dsBaseClient*, and labelled* if your R lacks it
#   --relax     (with --from) install on an older R such as Debian 12's 4.2: lowers
#               DSI's `R (>= 4.3)`, drops MolgenisAuth's httr2 minimum (only its OIDC
#               device flow uses httr2) and dsBaseClient's `meta` import (only
#               ds.forestplot uses it), in a temporary copy of the sources
#   --offline   (with --from) install no dependency from a repository: they must be
#               there already, e.g. Debian's r-cran-* packages (docs/guides/r-users.md)
#   REPOS       repositories for the default mode and for dependencies
#               (default: https://datashield.r-universe.dev and https://cloud.r-project.org)
#
# Then: DSGATEWAY_REAL_R_LIB=<lib> .venv/bin/python -m pytest tests/functional/test_real_r_clients.py
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
lib=${DSGATEWAY_REAL_R_LIB:-$HOME/.local/share/dsgateway/real-rlib}
from="" relax=0 offline=0
repos=${REPOS:-"https://datashield.r-universe.dev https://cloud.r-project.org"}

while [ $# -gt 0 ]; do
  case "$1" in
    --lib) lib=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    --relax) relax=1; shift ;;
    --offline) offline=1; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

inside_repo() {  # never install into, or read packages from, this repository
  local path
  path=$(realpath -m "$1")
  [ "$path" = "$repo_root" ] || [[ "$path" == "$repo_root"/* ]]
}
if inside_repo "$lib"; then
  echo "--lib $lib is inside the repository: choose a directory outside it" >&2; exit 2
fi
if [ -n "$from" ] && inside_repo "$from"; then
  echo "--from $from is inside the repository: the sources must come from elsewhere" >&2; exit 2
fi
command -v Rscript >/dev/null || { echo "Rscript is not installed" >&2; exit 1; }
mkdir -p "$lib"
lib=$(realpath "$lib")
export R_LIBS="$lib${R_LIBS:+:$R_LIBS}"
r_repos=$(printf '"%s",' $repos); r_repos="c(${r_repos%,})"

if [ -z "$from" ]; then
  echo "Installing DSI, DSMolgenisArmadillo, DSOpal, dsBaseClient into $lib from $repos"
  Rscript --vanilla -e "
    install.packages(c('DSI', 'DSMolgenisArmadillo', 'DSOpal', 'dsBaseClient'),
                     lib = '$lib', repos = $r_repos,
                     dependencies = c('Depends', 'Imports', 'LinkingTo'))"
else
  [ -d "$from" ] || { echo "--from $from: no such directory" >&2; exit 2; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # dependency order; labelled only when R lacks it (opalr imports it)
  for pkg in DSI MolgenisAuth DSMolgenisArmadillo labelled opalr DSOpal dsBaseClient; do
    if [ "$pkg" = labelled ] && Rscript --vanilla -e 'quit(status = !requireNamespace("labelled", quietly = TRUE))' 2>/dev/null; then
      continue
    fi
    src=$(find "$from" -maxdepth 1 \( -name "$pkg" -o -name "${pkg}_*.tar.gz" -o -name "${pkg}-*" \) | sort | tail -1)
    if [ -z "$src" ]; then
      [ "$pkg" = labelled ] && { echo "labelled is missing: put its sources in $from" >&2; exit 1; }
      echo "$pkg: not found in $from" >&2; exit 1
    fi
    copy="$work/$pkg"
    mkdir -p "$copy"
    if [ -d "$src" ]; then cp -R "$src/." "$copy"; else tar -xzf "$src" -C "$copy" --strip-components=1; fi
    if [ "$relax" = 1 ]; then
      case "$pkg" in
        DSI) sed -i 's/R (>= 4\.3)/R (>= 4.2)/' "$copy/DESCRIPTION" ;;
        MolgenisAuth) sed -i 's/httr2 *([^)]*)/httr2/' "$copy/DESCRIPTION" ;;
        dsBaseClient) sed -i '/^ *meta,$/d' "$copy/DESCRIPTION" ;;
      esac
    fi
    if [ "$offline" = 0 ]; then  # the CRAN dependencies this package lacks
      Rscript --vanilla -e "
        d <- read.dcf('$copy/DESCRIPTION', fields = c('Depends', 'Imports'))
        need <- trimws(sub('\\\\(.*', '', unlist(strsplit(paste(na.omit(d), collapse = ','), ','))))
        need <- setdiff(need[nzchar(need)], c('R', rownames(installed.packages())))
        need <- setdiff(need, c('DSI', 'MolgenisAuth', 'DSMolgenisArmadillo', 'opalr', 'DSOpal'))
        if (length(need)) install.packages(need, lib = '$lib', repos = $r_repos)"
    fi
    echo "R CMD INSTALL $pkg ($src)"
    R CMD INSTALL --no-test-load -l "$lib" "$copy" >"$work/$pkg.log" 2>&1 || {
      tail -20 "$work/$pkg.log" >&2
      echo "$pkg did not install (a dependency missing? see docs/guides/r-users.md)" >&2
      exit 1
    }
  done
fi

Rscript --vanilla -e "
  for (p in c('DSI', 'MolgenisAuth', 'DSMolgenisArmadillo', 'opalr', 'DSOpal', 'dsBaseClient')) {
    suppressPackageStartupMessages(library(p, character.only = TRUE, lib.loc = c('$lib', .libPaths())))
    cat(sprintf('%-20s %s\n', p, as.character(packageVersion(p, lib.loc = c('$lib', .libPaths())))))
  }"
echo "Done. Run the opt-in tests with:"
echo "  DSGATEWAY_REAL_R_LIB=$lib .venv/bin/python -m pytest -q tests/functional/test_real_r_clients.py"
