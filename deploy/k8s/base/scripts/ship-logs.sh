#!/bin/sh
# The gateway pod's log-shipping sidecar (POD-05).
#
# nginx writes its access log into one file per minute, $LOG_DIR/access-<minute>.log
# (config/nginx.conf). Every 10 s this loop appends each file that nginx has finished with
# to $ARCHIVE_DIR/access-<day>.log on the PersistentVolume, then deletes it, so the pod's
# emptyDir holds about two minutes of logs and the archive holds all of them. A file counts
# as finished when it is neither the current minute's nor the previous minute's (a request
# that started in one minute may be logged a moment into the next). On SIGTERM, which a
# native sidecar receives only after nginx has exited, it ships everything, the current
# minute included, and exits.
#
# POSIX sh and coreutils/busybox only: it runs in the gateway's own nginx image. Each
# pass touches /tmp/ship-logs.alive, which the liveness probe reads.
set -eu

LOG_DIR="${LOG_DIR:-/var/log/gateway}"
ARCHIVE_DIR="${ARCHIVE_DIR:?set ARCHIVE_DIR to a directory on the persistent volume}"
INTERVAL="${SHIP_INTERVAL_SECONDS:-10}"
ALIVE_FILE="${ALIVE_FILE:-/tmp/ship-logs.alive}"

minute() {
    # The minute $1 seconds ago, in the same form as nginx's $log_minute (UTC).
    date -u -d "@$(( $(date +%s) - $1 ))" +%Y-%m-%dT%H:%M
}

# Appends one minute file to its day's archive file, then removes it. The append and the
# removal are separate steps: a crash between them ships those lines twice on the next
# pass, never zero times.
ship() {
    file="$1"
    name="${file##*/access-}"
    day="${name%%T*}"
    cat "$file" >>"$ARCHIVE_DIR/access-$day.log"
    rm -f "$file"
}

ship_finished() {
    current="$(minute 0)"
    previous="$(minute 60)"
    for file in "$LOG_DIR"/access-*.log; do
        [ -e "$file" ] || continue
        case "$file" in
            *"access-$current.log" | *"access-$previous.log") ;;
            *) ship "$file" ;;
        esac
    done
}

ship_all_and_exit() {
    for file in "$LOG_DIR"/access-*.log; do
        [ -e "$file" ] || continue
        ship "$file"
    done
    echo "ship-logs: shipped everything to $ARCHIVE_DIR; exiting"
    exit 0
}

mkdir -p "$ARCHIVE_DIR"
trap ship_all_and_exit TERM INT
echo "ship-logs: moving finished minute files from $LOG_DIR to $ARCHIVE_DIR every ${INTERVAL}s"
while :; do
    ship_finished
    touch "$ALIVE_FILE"
    # sleep in the background and wait, so a SIGTERM is handled at once, not after it.
    sleep "$INTERVAL" &
    wait $! || true
done
