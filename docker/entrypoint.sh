#!/bin/sh
# Entry point of the dsgateway images. Secrets come from files (Docker/compose secrets,
# mounted at run time), never from the image: for every variable DSGATEWAY_<NAME>_FILE
# set, DSGATEWAY_<NAME> is set to the content of that file (its last newline dropped).
# DSGATEWAY_COORD_RELAY_PRIVATE_KEY_FILE is left alone: that setting is itself a path.
# Then the command replaces this shell (exec), so it receives the stop signal.
set -eu
for var in $(env | sed -n 's/^\(DSGATEWAY_[A-Z0-9_]*\)_FILE=.*/\1/p'); do
    [ "$var" = DSGATEWAY_COORD_RELAY_PRIVATE_KEY ] && continue
    file=$(printenv "${var}_FILE")
    if [ ! -r "$file" ]; then
        echo "dsgateway: ${var}_FILE names $file, which cannot be read by uid $(id -u)" >&2
        exit 64
    fi
    value=$(cat "$file")
    export "$var=$value"
    unset "${var}_FILE"
done
exec "$@"
