#!/bin/sh
# Entry point of the service images: serve every bundle under $BERTKIT_BUNDLE_ROOT (default /bundles),
# unless BERTKIT_BUNDLES already lists them. Extra arguments go to uvicorn.
set -eu
root="${BERTKIT_BUNDLE_ROOT:-/bundles}"
if [ -z "${BERTKIT_BUNDLES:-}" ]; then
    if [ -f "$root/bundle.json" ]; then
        BERTKIT_BUNDLES="$root"
    else
        BERTKIT_BUNDLES=""
        for dir in "$root"/*/; do
            [ -d "$dir" ] || continue
            BERTKIT_BUNDLES="${BERTKIT_BUNDLES:+$BERTKIT_BUNDLES,}${dir%/}"
        done
    fi
    if [ -z "$BERTKIT_BUNDLES" ]; then
        echo "serve: no bundles under $root; mount a directory of bundles there (-v \$PWD/bundles:/bundles:ro) or bake them in (--build-arg BUNDLES_DIR=bundles)" >&2
        exit 2
    fi
    export BERTKIT_BUNDLES
fi
echo "serve: bundles $BERTKIT_BUNDLES on ${HOST:-0.0.0.0}:${PORT:-8000}" >&2
# Idle keep-alive connections stay open longer than the proxies' in front (see keep_alive_timeout_s in
# service/config.py, whose default this mirrors): the server must not be the first to close one.
exec uvicorn service.main:app --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" \
    --timeout-keep-alive "${BERTKIT_KEEP_ALIVE_TIMEOUT_S:-75}" "$@"
