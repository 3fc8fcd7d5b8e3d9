# Shared by start and stop (sourced): names and the test "is this process our node on PORT?".
# shellcheck shell=bash
PORT="${OPENSEARCH_PORT:-9200}"
RUN="$HERE/run"
PIDFILE="$RUN/opensearch-$PORT.pid"
LOG="$RUN/opensearch-$PORT.log"
OS_VERSION="$(sed -n 's:.*<opensearch.version>\(.*\)</opensearch.version>.*:\1:p' "$HERE/pom.xml" | head -n 1)"
NODE_HOME="$HERE/target/opensearch-$OS_VERSION"

die() { echo "opensearch-local: $*" >&2; exit 1; }

# start passes these as the node's first arguments; they survive into the java command line
# (bin/opensearch execs java with "$@" last).
node_args_of() { echo "-Enode.name=local-$1 -Ehttp.port=$1 "; }

# The pid of our node on port $1 (from its pid file), or status 1.
our_pid() {
    local pidfile="$RUN/opensearch-$1.pid" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$(node_args_of "$1")" || return 1
    echo "$pid"
}

# Ports of our nodes that are running now.
running_ports() {
    local f port out=()
    for f in "$RUN"/opensearch-*.pid; do
        [[ -f "$f" ]] || continue
        port="${f##*/opensearch-}"; port="${port%.pid}"
        our_pid "$port" >/dev/null && out+=("$port")
    done
    echo "${out[*]:-}"
}
