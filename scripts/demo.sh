#!/usr/bin/env bash
# make demo: the main job end to end on local parts. Starts moto (S3, Secrets Manager), the
# Pipefy emulator, `cargo lambda watch` (the Lambda Runtime and Invoke APIs) and the real
# functions attached to it; sets up the bucket, the token secret and two destination files;
# uploads the sample tables and contract PDFs; invokes sync-scheduled, sync-upload (with an
# S3 event), notify, and sync-scheduled again for the contracts (attachments from S3); ends
# with what each run did, its failed rows and why, and the run pages copied into
# .demo/pages/ to open in a browser.
# Everything it starts is stopped on exit, also when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=$root/.venv/bin
work=$root/.demo
rm -rf "$work" && mkdir -p "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 600); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "demo: nothing listens on port $1 ($2)" >&2; return 1
}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building the emulator and the functions (profile demo)"
# One build: the crates the emulator and the functions share are compiled once, and both
# cores stay busy. `cargo lambda watch` then serves only the Lambda APIs and the functions
# are started from this build, so it never builds them again by itself.
functions=(sync-scheduled sync-upload notify)
cargo build -q --profile demo -p pipefy-emulator -p sync-scheduled -p sync-upload -p notify

moto_port=$(free_port); emu_port=$(free_port); lambda_port=$(free_port)
aws=http://127.0.0.1:$moto_port
system_bucket=pipefy-sync-demo
data_bucket=demo-data-lake

step "starting moto server on :$moto_port and the Pipefy emulator on :$emu_port"
"$venv/moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 & pids+=($!)
target/demo/pipefy-emulator --port "$emu_port" --fixture tests/fixtures/emulator/demo.json >"$work/emulator.log" 2>&1 & pids+=($!)
wait_port "$moto_port" moto; wait_port "$emu_port" emulator

step "creating buckets, the token secret and the destination file; uploading the sample table"
"$venv/python" scripts/local_aws.py "$aws" setup "$system_bucket" pipefy-sync/pipefy-token demo-token
"$venv/python" scripts/local_aws.py "$aws" bucket "$data_bucket"
sed -e "s|\${DATA_BUCKET}|$data_bucket|" -e "s|\${PIPEFY_ENDPOINT}|http://127.0.0.1:$emu_port/graphql|" \
  tests/fixtures/demo/destinations/customers.yaml >"$work/customers.yaml"
"$venv/python" scripts/local_aws.py "$aws" put "$system_bucket" config/destinations/customers.yaml "$work/customers.yaml"
"$venv/python" scripts/local_aws.py "$aws" put "$data_bucket" refined/customers/part-0001.csv tests/fixtures/demo/data/refined/customers/part-0001.csv
# The second destination: contract files in the lake, attached to the customers' cards.
sed -e "s|\${DATA_BUCKET}|$data_bucket|" -e "s|\${PIPEFY_ENDPOINT}|http://127.0.0.1:$emu_port/graphql|" \
  tests/fixtures/demo/destinations/contracts.yaml >"$work/contracts.yaml"
"$venv/python" scripts/local_aws.py "$aws" put "$system_bucket" config/destinations/contracts.yaml "$work/contracts.yaml"
"$venv/python" scripts/local_aws.py "$aws" put "$data_bucket" refined/contracts/part-0001.csv tests/fixtures/demo/data/refined/contracts/part-0001.csv
for f in tests/fixtures/demo/documents/contracts/*.pdf; do
  "$venv/python" scripts/local_aws.py "$aws" put "$data_bucket" "documents/contracts/$(basename "$f")" "$f"
done

step "starting cargo lambda watch on :$lambda_port and the functions"
"$venv/cargo-lambda" lambda watch -q --only-lambda-apis --ignore-changes -P "$lambda_port" -A 127.0.0.1 >"$work/lambda.log" 2>&1 & pids+=($!)
wait_port "$lambda_port" "cargo lambda watch"
for fn in "${functions[@]}"; do
  # What Lambda gives a function, with the Runtime API at this function's route.
  env PIPEFY_SYNC_BUCKET="$system_bucket" AWS_ENDPOINT_URL="$aws" AWS_ENDPOINT_URL_LAMBDA="http://127.0.0.1:$lambda_port" \
    AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_LAMBDA_LOG_FORMAT=Text \
    AWS_LAMBDA_FUNCTION_NAME="$fn" AWS_LAMBDA_FUNCTION_VERSION='$LATEST' AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024 \
    AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$lambda_port/.rt/$fn" \
    "target/demo/$fn" >"$work/$fn.log" 2>&1 & pids+=($!)
done

# Invokes a function; its response is kept in .demo/<name>.json and told in one line.
invoke() {
  local fn=$1 data=$2 name=$3
  timeout 600 "$venv/cargo-lambda" lambda invoke "$fn" -P "$lambda_port" -A 127.0.0.1 --data-file "$data" --output-format json >"$work/$name.json"
  python3 - "$work/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for s in r.get("runs", [r]) if "runs" in r or "counts" in r else []:
    c = s["counts"]
    print(f"{s['destination']}: {s['status']}, created {c['created']}, updated {c['updated']}, unchanged {c['unchanged']}, "
          f"failed {c['skipped_by_preflight'] + c['failed'] + c['not_attempted']}")
if "event" in r:
    print(f"notify: event {r['event']}; {r.get('message') or 'nothing to say'}")
print(f"(response in {sys.argv[1]})")
PY
}

step "sync-scheduled: a scheduled run of customers-onboarding"
invoke sync-scheduled tests/fixtures/demo/events/scheduled.json scheduled

step "upload 'refined/customers/part 1+ü.csv' and send its S3 event to sync-upload"
"$venv/python" scripts/local_aws.py "$aws" put "$data_bucket" "refined/customers/part 1+ü.csv" "tests/fixtures/demo/data/refined/customers/part 1+ü.csv"
size=$("$venv/python" scripts/local_aws.py "$aws" size "$data_bucket" "refined/customers/part 1+ü.csv")
sed -e "s|\${DATA_BUCKET}|$data_bucket|g" -e "s|\${OBJECT_SIZE}|$size|" tests/fixtures/demo/events/s3-upload.json >"$work/s3-event.json"
invoke sync-upload "$work/s3-event.json" upload

step "notify: the scheduled run's on-success record (it had failed rows)"
python3 - "$work/scheduled.json" >"$work/notify-event.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
print(json.dumps({"version": "1.0", "timestamp": "2026-11-22T06:00:05Z",
  "requestContext": {"requestId": "demo", "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:sync-scheduled:$LATEST", "condition": "Success", "approximateInvokeCount": 1},
  "requestPayload": {"destination": summary["destination"]},
  "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
  "responsePayload": summary}))
PY
invoke notify "$work/notify-event.json" notify

step "sync-scheduled: customer-contracts attaches the contract PDFs in S3 to those cards"
invoke sync-scheduled tests/fixtures/demo/events/contracts.json contracts

step "what the emulator holds"
python3 - "http://127.0.0.1:$emu_port" <<'PY'
import json, sys, urllib.request
state = json.load(urllib.request.urlopen(sys.argv[1] + "/_emulator/state"))
cards = [c for c in state.get("cards", []) if str(c.get("pipe_id")) == "301"]
print(f"{len(cards)} cards in pipe 301 (Customer onboarding)")
uploads = json.load(urllib.request.urlopen(sys.argv[1] + "/_emulator/uploads"))
with_files = [c for c in cards if c.get("fields", {}).get("documents")]
print(f"{sum(1 for u in uploads if u.get('uploaded'))} files in Pipefy's storage, on {len(with_files)} cards' Documents field")
PY

step "what happened (reports in s3://$system_bucket/reports/)"
"$venv/python" scripts/local_aws.py "$aws" report "$system_bucket" customers-onboarding "$work/pages"
"$venv/python" scripts/local_aws.py "$aws" report "$system_bucket" customer-contracts "$work/pages/customer-contracts"
printf '\ndemo: done. Open the pages above in a browser; logs and responses are in .demo/\n'
