#!/bin/sh
# Start redis-server with its password read from a secret file (COMP-09).
#
# compose.yaml runs this as the redis service's command, with the persistence options as
# arguments. The password is handed over on standard input as a config line ("-" makes
# redis-server read its config from stdin), so it never appears in the container's
# environment, in `docker inspect`, or in the process list; the secret file is the only
# place it is stored. Works with the official redis images and Debian's redis-server.
set -eu

password_file="${REDIS_PASSWORD_FILE:-/run/secrets/redis_password}"
if [ ! -r "$password_file" ]; then
    echo "redis-start: cannot read $password_file; mount the redis_password secret" >&2
    exit 2
fi
password=$(cat "$password_file")
if [ -z "$password" ]; then
    echo "redis-start: $password_file is empty" >&2
    exit 2
fi

# exec: redis-server becomes PID 1 and receives `docker stop`'s SIGTERM itself, so it
# flushes the AOF and exits cleanly.
exec redis-server - "$@" <<EOF_CONFIG
requirepass "$password"
EOF_CONFIG
