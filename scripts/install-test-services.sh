#!/usr/bin/env bash
# What the test suite needs beyond pip: Chromium (the web app's browser tests) and the PostgreSQL
# server binaries (every feedback test runs on SQLite and on PostgreSQL), from Debian's packages.
# The README's test command and .ci/run both call this. Where installing is impossible (not root,
# no apt-get, no network) it says why and succeeds anyway: those tests then skip, naming what is
# missing, and the rest of the suite still runs.
set -uo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || command -v pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -eq 0 ]; then
  echo "+ chromium and postgresql already installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: ${missing[*]} missing and cannot be installed here (needs root and apt-get); their tests will skip"
  exit 0
fi
echo "+ apt-get install ${missing[*]}"
if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; }; then
  echo "note: apt-get could not install ${missing[*]} (see above); their tests will skip"
fi
exit 0
