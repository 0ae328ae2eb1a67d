#!/usr/bin/env bash
# Refresh vendor/ from the npm registry at the versions package.json pins (psd serves these
# files itself: no CDN at run time, and no Node where psd runs).
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent swagger-ui-dist@5.35.0 uplot@1.6.32 >/dev/null)
for pkg in "$work"/*.tgz; do tar -xzf "$pkg" -C "$work" && mv "$work/package" "${pkg%.tgz}"; done
cp "$work"/swagger-ui-dist-5.35.0/{swagger-ui-bundle.js,swagger-ui.css,LICENSE} vendor/swagger-ui-5.35.0/
cp "$work"/uplot-1.6.32/dist/{uPlot.iife.min.js,uPlot.min.css} "$work"/uplot-1.6.32/LICENSE vendor/uplot-1.6.32/
