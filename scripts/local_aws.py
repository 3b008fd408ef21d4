"""Small AWS chores for the demo, against moto server (boto3 comes with moto[server]).

Usage: local_aws.py ENDPOINT COMMAND ARGS...
  setup BUCKET SECRET_NAME TOKEN   create the bucket and the token secret
  put BUCKET KEY FILE              upload a file
  put-text BUCKET KEY TEXT         upload a string
  size BUCKET KEY                  print an object's size
  report BUCKET DESTINATION        print the latest run reports of a destination
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
        bucket, destination = args
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"reports/{destination}/")
        keys = sorted(o["Key"] for o in listed.get("Contents", []))
        for key in keys:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            if key.endswith("summary.json"):
                s = json.loads(body)
                c = s["counts"]
                print(f"\n== {key}")
                print(f"   status {s['status']}  trigger {s['trigger']}  dry_run {s['dry_run']}  files {len(s['source_files'])}")
                print("   " + "  ".join(f"{k} {v}" for k, v in c.items()))
            elif "/failed/" in key:
                print(f"-- failed rows ({key}):")
                for line in body.splitlines():
                    row = json.loads(line)
                    print(f"   {row['_source_file']}:{row['_source_line']}  {row['_error_code']}: {row['_error_message']}")
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
