#!/usr/bin/env bash
# Nothing the gateway tests need runs as a service yet; the coordinator's tests will
# start PostgreSQL and Redis here when they are missing.
exit 0
