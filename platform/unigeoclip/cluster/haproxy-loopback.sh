#!/bin/sh
# Serve's HAProxy, with its side doors closed: Ray writes a config whose stats page ("listen stats",
# `bind *:PORT`) and Prometheus exporter ("frontend prometheus", `bind :PORT`) listen on every interface,
# and whose admin socket is mode 666. This wrapper (RAY_SERVE_HAPROXY_BINARY_PATH, set by
# unigeoclip.cluster.runtime) binds those two to 127.0.0.1, makes the socket 600, and execs the real HAProxy
# ($UNIGEOCLIP_HAPROXY_BINARY) with the same arguments. The service's own frontend is left as configured.
#
# It also gives HAProxy's own answers for a gateway that is down, failing or slow the service's JSON error
# body: the pages in haproxy-errors/ beside this script (502, 503 and 504, each under its own status and
# with Retry-After) in place of Ray's, which turn all three into a text/plain 500. (HAProxy 2.8 answers a
# request its HTTP/1 parser refuses with built-in HTML whatever the errorfiles say: haproxy/haproxy#3032.)
set -eu
real="${UNIGEOCLIP_HAPROXY_BINARY:?set by unigeoclip.cluster.runtime: the real HAProxy binary}"
if [ "$real" -ef "$0" ]; then
    echo "haproxy-loopback.sh: UNIGEOCLIP_HAPROXY_BINARY ($real) is this wrapper, not HAProxy" >&2
    exit 2
fi
errors="$(dirname "$0")/haproxy-errors"
pages=""
for page in "$errors"/*.http; do
    if [ -f "$page" ]; then pages="$pages $page"; fi
done
config=""
previous=""
for arg in "$@"; do
    if [ "$previous" = "-f" ]; then config="$arg"; fi
    previous="$arg"
done
if [ -n "$config" ] && [ -f "$config" ]; then
    awk -v pages="$pages" '
        /^[^ \t]/ { section = $0 }
        section ~ /^defaults/ && $1 == "errorfile" && pages != "" { next }
        section ~ /^frontend prometheus/ && $1 == "bind" { sub(/bind :/, "bind 127.0.0.1:") }
        section ~ /^listen stats/ && $1 == "bind" { sub(/bind \*:/, "bind 127.0.0.1:") }
        $1 == "stats" && $2 == "socket" { sub(/ mode 666 /, " mode 600 ") }
        { print }
        /^defaults/ && pages != "" {
            n = split(pages, page, " ")
            for (i = 1; i <= n; i++) {
                code = page[i]; sub(/.*\//, "", code); sub(/\.http$/, "", code)
                print "    errorfile " code " " page[i]
            }
        }
    ' "$config" > "$config.loopback" && mv "$config.loopback" "$config"
fi
exec "$real" "$@"
