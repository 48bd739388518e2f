#!/usr/bin/env bash
# A small stand-in for the official postgres image's docker-entrypoint.sh, honouring the
# same contract: POSTGRES_PASSWORD[_FILE], POSTGRES_USER (default postgres), POSTGRES_DB
# (default $POSTGRES_USER), POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (default
# scram-sha-256), and *.sql / *.sh files in /docker-entrypoint-initdb.d on first start.
# It runs as root (then drops to postgres), as postgres, or as any other uid, which needs
# no passwd entry: initdb gets one from nss_wrapper, as in the official entrypoint.
set -Eeuo pipefail

# VAR_FILE names a file holding VAR's value (Docker and Kubernetes secrets).
file_env() {
    local var="$1" file_var="${1}_FILE" default="${2:-}"
    if [[ -n "${!var:-}" && -n "${!file_var:-}" ]]; then
        echo "error: both $var and $file_var are set; choose one" >&2
        exit 1
    fi
    local value="$default"
    if [[ -n "${!var:-}" ]]; then
        value="${!var}"
    elif [[ -n "${!file_var:-}" ]]; then
        value="$(<"${!file_var}")"
    fi
    export "$var"="$value"
    unset "$file_var"
}

# `docker run IMAGE -c shared_buffers=256MB` means postgres with that option.
if [[ "${1:0:1}" == "-" ]]; then
    set -- postgres "$@"
fi

if [[ "$1" == "postgres" && "$(id -u)" == "0" ]]; then
    install -d -o postgres -g postgres -m 0700 "$PGDATA"
    install -d -o postgres -g postgres -m 3777 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [[ "$1" == "postgres" && ! -s "$PGDATA/PG_VERSION" ]]; then
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
    if [[ -z "$POSTGRES_PASSWORD" && "$auth" != "trust" ]]; then
        echo "error: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (the database would have no password)" >&2
        exit 1
    fi
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA" 2>/dev/null || true
    # initdb insists that the current uid has a passwd entry. With none (a uid picked by
    # the platform, such as 10999), fake one for initdb alone, the way the official
    # entrypoint does: nss_wrapper answers getpwuid() from a file of our own.
    nss=()
    if ! getent passwd "$(id -u)" >/dev/null; then
        for wrapper in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so; do
            [[ -s "$wrapper" ]] || continue
            passwd="$(mktemp)" group="$(mktemp)"
            printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$(id -u)" "$(id -g)" "$PGDATA" >"$passwd"
            printf 'postgres:x:%s:\n' "$(id -g)" >"$group"
            nss=(env LD_PRELOAD="$wrapper" NSS_WRAPPER_PASSWD="$passwd" NSS_WRAPPER_GROUP="$group")
            break
        done
    fi
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as upstream.
    "${nss[@]}" initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host="$auth" --encoding=UTF8 --locale=C.UTF-8 \
        ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA" >/dev/null
    if ((${#nss[@]})); then rm -f "$passwd" "$group"; fi
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    printf 'host all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

    # A temporary server on the socket only: no TCP client can connect before it is ready.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w -s start
    psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres -q)
    if [[ "$POSTGRES_DB" != "postgres" ]]; then
        "${psql[@]}" --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh)
                echo "running $f"
                # shellcheck source=/dev/null # the image user's own scripts, unknown here.
                . "$f"
                ;;
            *.sql) echo "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
            *) [[ -e "$f" ]] && echo "ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w -s stop
    unset POSTGRES_PASSWORD
    echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
