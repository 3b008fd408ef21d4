#!/usr/bin/env bash
# Static checks of infra/ (run by `make test`):
#   1. terraform fmt -check (skipped, with a message, where terraform is not installed);
#   2. checkov on infra/ with no failed check, every skip justified in place;
#   3. tests/infra/agreement.py: Terraform and the Rust code agree;
#   4. tests/infra/provider_schema.py: every resource and data source type, argument, nested
#      block and referenced attribute exists in the AWS provider's schema, at the lowest and
#      at the newest version versions.tf allows (the releases of @cdktf/provider-aws pinned
#      in tests/infra/provider-schema.lock; scripts/setup-tools.sh fetches them, and so does
#      the check itself when they are missing). It runs its self-test first.
# `terraform validate` needs the AWS provider, which CI cannot download: it is part of the
# deploy steps in infra/README.md instead. Step 4 covers the names validate would check
# against the schema, not value types or required arguments.
#
# CHECKOV: checkov executable (default: `checkov` on PATH, else .venv/bin/checkov).
# PYTHON:  Python with python-hcl2 and PyYAML for agreement.py and provider_schema.py
#          (default: the Python of checkov's virtualenv, which ships both).
set -euo pipefail
cd "$(dirname "$0")/../.."

failed=0
step() { printf '\n== %s\n' "$1"; }

step "terraform fmt -check -recursive infra"
if command -v terraform >/dev/null 2>&1; then
  # -no-color: CI logs; CHECKPOINT_DISABLE: no version check over the network.
  if CHECKPOINT_DISABLE=1 terraform fmt -check -recursive -diff -no-color infra; then
    echo "ok: infra/ is formatted"
  else
    echo "FAIL: run \`terraform fmt -recursive infra\`"
    failed=1
  fi
else
  echo "SKIPPED: terraform is not installed on this machine; formatting of infra/ is not checked here"
fi

step "checkov --framework terraform infra"
checkov_bin=${CHECKOV:-}
if [ -z "$checkov_bin" ]; then
  if command -v checkov >/dev/null 2>&1; then
    checkov_bin=$(command -v checkov)
  elif [ -x .venv/bin/checkov ]; then
    checkov_bin=.venv/bin/checkov
  fi
fi
if [ -z "$checkov_bin" ] || ! [ -x "$(command -v "$checkov_bin" || true)" ]; then
  echo "FAIL: checkov not found: run scripts/setup-tools.sh (installs checkov==3.3.30 into .venv) or set CHECKOV"
  exit 1
fi
# No network: no external modules, nothing downloaded from the Prisma Cloud platform.
if "$checkov_bin" \
  --directory infra \
  --framework terraform \
  --download-external-modules false \
  --skip-download \
  --compact \
  --quiet; then
  echo "ok: checkov reports no failed check"
else
  echo "FAIL: checkov reports failed checks (fix them, or skip with #checkov:skip=CKV_...:<reason> in the resource)"
  failed=1
fi

# A skip must say why, next to what it skips.
unjustified=$(grep -rnE --include='*.tf' '#\s*checkov:skip=[A-Z0-9_]+\s*(:\s*)?$' infra || true)
if [ -n "$unjustified" ]; then
  echo "FAIL: checkov skips without a reason:"
  echo "$unjustified"
  failed=1
else
  echo "ok: every checkov skip carries its reason ($(grep -rc --include='*.tf' 'checkov:skip=' infra | awk -F: '{s+=$2} END {print s}') skips)"
fi

step "tests/infra/agreement.py"
python_bin=${PYTHON:-}
if [ -z "$python_bin" ]; then
  checkov_dir=$(dirname "$(command -v "$checkov_bin")")
  if [ -x "$checkov_dir/python" ]; then
    python_bin=$checkov_dir/python
  else
    python_bin=python3
  fi
fi
if ! "$python_bin" tests/infra/agreement.py; then
  failed=1
fi

step "tests/infra/provider_schema.py (provider schema)"
if ! "$python_bin" tests/infra/provider_schema.py; then
  failed=1
fi

echo
if [ "$failed" -ne 0 ]; then
  echo "infra checks: FAILED"
  exit 1
fi
echo "infra checks: passed"
