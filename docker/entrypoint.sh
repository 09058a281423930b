#!/bin/sh
# edge-service container entrypoint: serve at once, building the engines on the way.
#
#   edge-entrypoint [serve] [SERVE OPTIONS]  `edge-service serve --build [SERVE OPTIONS]`
#                                            (or build first, then serve: see below)
#   edge-entrypoint build-engines            build the engines if needed, then exit
#                                            (a Kubernetes init container)
#   edge-entrypoint COMMAND [ARGS...]        run anything else, e.g.
#                                            `edge-service monitor --once --json`
#
# Engines are device-specific (TensorRT plans, latencies measured on this board), so they
# are not in the image: they are built on the device into $EDGE_ENGINES_DIR, a volume, and
# later starts reuse them.
#
#   EDGE_BUILD_ON_START  background (default): `serve --build`, the same as `make run`: the
#                        first engine is built before the server listens (about a minute),
#                        then the device's front, the other engines and the power-mode
#                        profiles are built in the background and join as they land; a
#                        start with a complete family serves in seconds.
#                        missing: run the whole `edge-service build` first when
#                        <engines_dir>/<family>/catalog.json is missing, then serve;
#                        always: the whole build every start, then serve (it is idempotent:
#                        seconds when up to date, a rebuild after an image upgrade changed
#                        TensorRT, ONNX Runtime or edge-service); never: only serve.
#   EDGE_BUILD_ARGS      more options for `edge-service build`, split on spaces, e.g.
#                        "--eval-limit 2000" or "--from-onnx /models/a.onnx --task detection
#                        --labels /models/labels.txt --calibration-images /models/frames".
#
# engines_dir and family are the server's own effective settings (environment, the config
# file, serve options), read with `edge-service serve --print-config --json`, which also
# refuses a bad configuration before a long build starts.
set -eu

log() {
    printf 'edge-entrypoint: %s\n' "$*" >&2
}

# The effective engines_dir and family, one per line.
engines_and_family() {
    config=$(edge-service serve --print-config --json "$@") || exit $?
    printf '%s' "$config" | python3 -c '
import json, sys
config = json.load(sys.stdin)
print(config["engines_dir"])
print(config["family"])'
}

ensure_engines() {
    mode=$(build_mode)
    case $mode in
        missing | always) ;;
        never) return 0 ;;
        background)
            # serve --build builds; refuse a bad configuration here all the same
            engines_and_family "$@" >/dev/null
            return 0
            ;;
        *)
            log "EDGE_BUILD_ON_START=$mode: use background, missing, always or never"
            exit 2
            ;;
    esac
    found=$(engines_and_family "$@")
    engines=$(printf '%s\n' "$found" | sed -n 1p)
    family=$(printf '%s\n' "$found" | sed -n 2p)
    catalog="$engines/$family/catalog.json"
    if [ "$mode" = missing ] && [ -f "$catalog" ]; then
        log "engines found ($catalog): reusing them"
        return 0
    fi
    log "building the engines of $family into $engines (first start: minutes on a board)"
    mkdir -p "$engines"
    if command -v flock >/dev/null 2>&1; then
        # Two containers sharing one volume build one at a time (the catalog is written last).
        (
            flock 9
            build_engines "$engines" "$family"
        ) 9>"$engines/.build.lock"
    else
        build_engines "$engines" "$family"
    fi
}

build_mode() {
    printf '%s' "${EDGE_BUILD_ON_START:-background}"
}

build_engines() {
    # shellcheck disable=SC2086  # EDGE_BUILD_ARGS is a list of options, split on purpose
    edge-service build --family "$2" --engines-dir "$1" ${EDGE_BUILD_ARGS:-}
}

command=${1:-serve}
case $command in
    serve | -*)
        if [ $# -gt 0 ] && [ "$1" = serve ]; then
            shift
        fi
        ensure_engines "$@"
        if [ "$(build_mode)" = background ]; then
            exec edge-service serve --build "$@"
        fi
        exec edge-service serve "$@"
        ;;
    build-engines)
        shift
        if [ "$(build_mode)" = background ]; then
            # An init container has no server to build beside: it builds what is missing.
            EDGE_BUILD_ON_START=missing
        fi
        ensure_engines "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
