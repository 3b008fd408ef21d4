#!/usr/bin/env python3
"""The peer of `make bench`: the script people write instead of pipefy-sync.

It reads the bench's CSV table and sends one `createCard` per row through the official
Python client (PyPI `pipefy`, module `pipefy_sdk`) pointed at the emulator with
PIPEFY_BASE_URL, with --in-flight calls at once (1: one request at a time, the plain loop;
4: what a user who knows asyncio writes); where that client is not installed it falls back
to a plain urllib loop sending the same mutation, one at a time. It stops after --seconds or
--max-cards, whichever comes first, and prints one JSON object with what it did, for the
bench to extrapolate the rate from.

Usage: bench_peer.py --base-url http://127.0.0.1:PORT --token T --pipe-id 301 --csv FILE
                     [--seconds 60] [--max-cards 300] [--in-flight 1]
                     [--client auto|sdk|urllib]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import time
import urllib.request

CREATE_CARD = """mutation($input: CreateCardInput!) {
  createCard(input: $input) { card { id title } }
}"""


def card_fields(row: dict[str, str]) -> tuple[str, dict[str, object]]:
    """Title and custom fields of a row: the same columns the bench destination maps."""
    title = f"{row['name']} ({row['plan']})"
    fields: dict[str, object] = {
        "external_id": row["customer_id"],
        "customer_name": row["name"].strip(),
        "email": row["email"].strip().lower(),
        "plan": row["plan"],
        "seats": row["seats"],
        "mrr": row["mrr"],
        "signup_date": row["signup"],
        "renewal_at": row["renewal"],
        "tasks": [t for t in row["tasks"].split(";") if t],
    }
    return title, fields


def read_rows(path: str):
    with open(path, newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f)


def finish(
    client: str, cards: int, errors: int, first_error: str | None, started: float, in_flight: int = 1
) -> None:
    print(
        json.dumps(
            {
                "client": client,
                "cards": cards,
                "errors": errors,
                "first_error": first_error,
                "seconds": time.monotonic() - started,
                "in_flight": in_flight,
            }
        )
    )


async def run_sdk(args: argparse.Namespace) -> None:
    # The official client reads its endpoint from the environment; http:// needs the
    # insecure-URL switch (local development only).
    os.environ["PIPEFY_BASE_URL"] = args.base_url
    os.environ["PIPEFY_ALLOW_INSECURE_URLS"] = "true"
    import httpx
    from pipefy_sdk import PipefyClient
    from pipefy_sdk.settings import PipefySettings

    class Bearer(httpx.Auth):
        def __init__(self, token: str) -> None:
            self.token = token

        def auth_flow(self, request):
            request.headers["Authorization"] = f"Bearer {self.token}"
            yield request

    client = PipefyClient(PipefySettings(), auth=Bearer(args.token))
    version = "pipefy_sdk"
    try:
        import importlib.metadata

        version = f"pipefy_sdk (PyPI pipefy {importlib.metadata.version('pipefy')})"
    except Exception:  # noqa: BLE001 - the version is only a label
        pass
    counts = {"cards": 0, "errors": 0, "taken": 0}
    first_error: list[str] = []
    started = time.monotonic()
    rows = read_rows(args.csv)

    async def worker() -> None:
        # Each worker takes the next row; the rows are shared, so no row is sent twice.
        while True:
            if counts["taken"] >= args.max_cards or time.monotonic() - started >= args.seconds:
                return
            row = next(rows, None)
            if row is None:
                return
            counts["taken"] += 1
            title, fields = card_fields(row)
            try:
                await client.create_card(args.pipe_id, fields, title=title)
                counts["cards"] += 1
            except Exception as e:  # noqa: BLE001 - counted and reported
                counts["errors"] += 1
                if not first_error:
                    first_error.append(f"{type(e).__name__}: {e}"[:500])

    await asyncio.gather(*(worker() for _ in range(max(1, args.in_flight))))
    finish(
        version,
        counts["cards"],
        counts["errors"],
        first_error[0] if first_error else None,
        started,
        max(1, args.in_flight),
    )


def run_urllib(args: argparse.Namespace) -> None:
    url = args.base_url.rstrip("/") + "/graphql"
    cards = errors = 0
    first_error = None
    started = time.monotonic()
    for row in read_rows(args.csv):
        if cards + errors >= args.max_cards or time.monotonic() - started >= args.seconds:
            break
        title, fields = card_fields(row)
        body = {
            "query": CREATE_CARD,
            "variables": {
                "input": {
                    "pipe_id": args.pipe_id,
                    "title": title,
                    "fields_attributes": [
                        {"field_id": k, "field_value": v} for k, v in fields.items()
                    ],
                }
            },
        }
        req = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                answer = json.load(resp)
            if answer.get("errors"):
                raise RuntimeError(json.dumps(answer["errors"])[:500])
            cards += 1
        except Exception as e:  # noqa: BLE001 - counted and reported
            errors += 1
            first_error = first_error or f"{type(e).__name__}: {e}"[:500]
    finish("urllib", cards, errors, first_error, started)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--pipe-id", required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--max-cards", type=int, default=300)
    p.add_argument("--in-flight", type=int, default=1)
    p.add_argument("--client", choices=["auto", "sdk", "urllib"], default="auto")
    args = p.parse_args()
    use_sdk = args.client == "sdk"
    if args.client == "auto":
        try:
            import pipefy_sdk  # noqa: F401

            use_sdk = True
        except ImportError:
            use_sdk = False
    if use_sdk:
        asyncio.run(run_sdk(args))
    elif args.in_flight > 1:
        sys.exit("bench_peer.py: --in-flight above 1 needs the pipefy client (pip install pipefy)")
    else:
        run_urllib(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
