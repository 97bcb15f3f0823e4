#!/usr/bin/env bash
# Copy the UI's third-party files from the npm packages pinned in package.json into the ui's static files
# (served from /static, no CDN). After changing a version in package.json: npm install, then this script;
# tests/test_ui_app.py checks the copies match the installed packages.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules/uplot ] || npm ci --no-audit --no-fund
dest=src/finopti/services/ui/static/vendor/uplot
mkdir -p "$dest"
cp node_modules/uplot/dist/uPlot.esm.js node_modules/uplot/dist/uPlot.min.css node_modules/uplot/LICENSE "$dest/"
echo "vendored uplot $(node -p "require('./node_modules/uplot/package.json').version") into $dest"
