#!/usr/bin/env bash
# Installs what the tests and the demo need, once each, so `make test` and `make demo` can
# call it every time:
#   - Debian's Chromium (the run page tests render pages in it), when /usr/bin/chromium is
#     missing: apt-get, as root or through sudo;
#   - the pinned Python tools into .venv: a stamp holding the requirements' hash makes a
#     second run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! [ -x /usr/bin/chromium ]; then
  echo "setup-tools: installing Debian's chromium (once)" >&2
  as_root=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup-tools: chromium is missing and this user cannot install it; run 'apt-get install chromium' as root" >&2; exit 1; }
    as_root=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine's package lists may be empty or stale: update and try again.
  "${as_root[@]}" apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { "${as_root[@]}" apt-get update -qq && "${as_root[@]}" apt-get install -y -qq chromium >/dev/null; }
fi
venv=.venv
stamp="$venv/.requirements.sha256"
want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/moto_server" ]; then
  exit 0
fi
echo "setup-tools: installing pinned tools into $venv (once)" >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
echo "$want" > "$stamp"
