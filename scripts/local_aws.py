"""Small AWS chores for the demo, against moto server (boto3 comes with moto[server]).

Usage: local_aws.py ENDPOINT COMMAND ARGS...
  setup BUCKET SECRET_NAME TOKEN   create the bucket and the token secret
  put BUCKET KEY FILE              upload a file
  put-text BUCKET KEY TEXT         upload a string
  size BUCKET KEY                  print an object's size
  report BUCKET DESTINATION OUT    print a destination's runs for a person (counts, failed
                                   rows and why) and copy their pages into folder OUT
"""
import json
import sys

import boto3


def client(endpoint, service):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


FAILED_ACTIONS = {"skipped", "failed", "not_attempted"}


def objects(s3, bucket, prefix):
    """Every key under the prefix, sorted."""
    keys, token = [], None
    while True:
        extra = {"ContinuationToken": token} if token else {}
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, **extra)
        keys += [o["Key"] for o in listed.get("Contents", [])]
        token = listed.get("NextContinuationToken")
        if not token:
            return sorted(keys)


def print_runs(s3, bucket, destination, out):
    """Each run in the order it started: what it did, its failed rows, where its page is."""
    import os

    read = lambda key: s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    keys = objects(s3, bucket, f"reports/{destination}/")
    runs = []
    for key in keys:
        if key.endswith("/summary.json"):
            summary = json.loads(read(key))
            if "counts" in summary and "status" in summary:
                runs.append((summary["started_at"], key[: -len("summary.json")], summary))
    for key in keys:
        if key.endswith(".html"):
            path = os.path.join(out, key[len(f"reports/{destination}/"):])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(read(key))
    print(f"\n{destination}:")
    for _, prefix, s in sorted(runs, key=lambda r: r[0]):
        c = s["counts"]
        failed = c["skipped_by_preflight"] + c["failed"] + c["not_attempted"]
        print(f"\n{s['trigger']} run {s['run_id']}: {s['status']}, {len(s['source_files'])} file(s)")
        print(f"  read {c['read']}, created {c['created']}, updated {c['updated']}, "
              f"unchanged {c['unchanged']}, failed {failed}, removed {c['removed']}; "
              f"{c['requests']} Pipefy requests")
        if c.get("files_uploaded"):
            print(f"  {c['files_uploaded']} file(s) uploaded to Pipefy, {c['bytes_uploaded']} bytes")
        # A day's result parts share one folder: reports/<destination>/results/<date>/.
        parts = f"reports/{destination}/results/{s['started_at'][:10]}/{s['run_id']}-part-"
        for key in keys:
            if key.startswith(parts):
                for line in read(key).splitlines():
                    r = json.loads(line)
                    if r["action"] in FAILED_ACTIONS:
                        field = f" field '{r['field']}'" if r.get("field") else ""
                        print(f"  ✗ {r['file']}:{r['line']} key {r.get('key') or '-'}{field}: "
                              f"{r.get('error_code')}: {r.get('error_message')}")
        page = os.path.join(out, prefix[len(f"reports/{destination}/"):], "report.html")
        if os.path.exists(page):
            print(f"  run page: {page}")
    index = os.path.join(out, "index.html")
    if os.path.exists(index):
        print(f"\nhistory of {destination}: {index}")


def main():
    endpoint, command, *args = sys.argv[1:]
    s3 = client(endpoint, "s3")
    if command == "setup":
        bucket, secret_name, token = args
        s3.create_bucket(Bucket=bucket)
        sm = client(endpoint, "secretsmanager")
        sm.create_secret(Name=secret_name, SecretString=token)
    elif command == "bucket":
        s3.create_bucket(Bucket=args[0])
    elif command == "put":
        bucket, key, path = args
        with open(path, "rb") as f:
            s3.put_object(Bucket=bucket, Key=key, Body=f.read())
    elif command == "put-text":
        bucket, key, text = args
        s3.put_object(Bucket=bucket, Key=key, Body=text.encode())
    elif command == "size":
        bucket, key = args
        print(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
    elif command == "report":
        bucket, destination, out = args
        print_runs(s3, bucket, destination, out)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
