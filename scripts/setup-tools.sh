#!/usr/bin/env bash
# Installs what the tests (`setup-tools.sh`) or only the demo (`setup-tools.sh demo`) need,
# once each, so `make test` and `make demo` can call it every time:
#   - Debian's Chromium (the run page tests render pages in it), when /usr/bin/chromium is
#     missing: apt-get, as root or through sudo; the demo does not need it;
#   - the pinned Python tools into .venv (requirements-dev.txt, or requirements-demo.txt for
#     the demo): a stamp holding the requirements' hash makes a second run a no-op;
#   - the AWS provider schema that tests/infra/provider_schema.py checks infra/ against, for
#     the two @cdktf/provider-aws releases of tests/infra/provider-schema.lock: downloaded
#     from the npm registry (npm itself is not needed), integrity checked against the lock, reduced to a few MB of JSON in
#     .venv/provider-schema/ and the tarballs deleted; present files make it a no-op. The
#     demo does not need it.
set -euo pipefail
cd "$(dirname "$0")/.."
for_demo=$([ "${1:-}" = demo ] && echo 1 || echo 0)

if [ "$for_demo" = 0 ] && ! [ -x /usr/bin/chromium ]; then
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
# The full set's stamp covers the demo's too.
full_stamp="$venv/.requirements.sha256"
full_want=$(cat requirements-dev.txt requirements-demo.txt | sha256sum | cut -d' ' -f1)
demo_stamp="$venv/.demo-requirements.sha256"
demo_want=$(sha256sum requirements-demo.txt | cut -d' ' -f1)
has() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ] && [ -x "$venv/bin/moto_server" ]; }
if ! { has "$full_stamp" "$full_want" || { [ "$for_demo" = 1 ] && has "$demo_stamp" "$demo_want"; }; }; then
  requirements=$([ "$for_demo" = 1 ] && echo requirements-demo.txt || echo requirements-dev.txt)
  echo "setup-tools: installing the pinned tools of $requirements into $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$demo_want" > "$demo_stamp"
  [ "$for_demo" = 1 ] || echo "$full_want" > "$full_stamp"
fi

# Stdlib only; it prints what it downloads (size, time) and says which release failed.
if [ "$for_demo" = 0 ]; then
  "$venv/bin/python" tests/infra/provider_schema.py fetch >&2
fi
