#!/bin/sh
# Serve's HAProxy, with its side doors closed: Ray writes a config whose stats page ("listen stats",
# `bind *:PORT`) and Prometheus exporter ("frontend prometheus", `bind :PORT`) listen on every interface,
# and whose admin socket is mode 666. This wrapper (RAY_SERVE_HAPROXY_BINARY_PATH, set by
# unigeoclip.runtime) binds those two to 127.0.0.1, makes the socket 600, and execs the real HAProxy
# ($UNIGEOCLIP_HAPROXY_BINARY) with the same arguments. The service's own frontend is left as configured.
set -eu
config=""
previous=""
for arg in "$@"; do
    if [ "$previous" = "-f" ]; then config="$arg"; fi
    previous="$arg"
done
if [ -n "$config" ] && [ -f "$config" ]; then
    awk '
        /^[^ \t]/ { section = $0 }
        section ~ /^frontend prometheus/ && $1 == "bind" { sub(/bind :/, "bind 127.0.0.1:") }
        section ~ /^listen stats/ && $1 == "bind" { sub(/bind \*:/, "bind 127.0.0.1:") }
        $1 == "stats" && $2 == "socket" { sub(/ mode 666 /, " mode 600 ") }
        { print }
    ' "$config" > "$config.loopback" && mv "$config.loopback" "$config"
fi
exec "${UNIGEOCLIP_HAPROXY_BINARY:?set by unigeoclip.runtime: the real HAProxy binary}" "$@"
