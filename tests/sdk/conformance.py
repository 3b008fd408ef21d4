"""Conformance of the Pipefy emulator against Pipefy's own Python SDK (PyPI `pipefy`).

Usage: python tests/sdk/conformance.py <graphql url> [token]

Drives the SDK's high-level client (`pipefy_sdk.client.PipefyClient`) against a running
emulator and checks both the SDK's answers and the emulator's state afterwards
(`GET <base>/_emulator/state`, `GET <base>/_emulator/uploads`). The emulator is expected
to serve the demo fixture plus one `attachment` field on pipe 301's start form and one on
table `tbl_accounts` (tests/emulator/tests/sdk_conformance.rs sets that up).

Prints one line per SDK call: `passed <call>` or `not modelled <call>: <why>`; on a
failure it prints `FAILED <call>: <why>` and exits 1 at the end. The calls in
NOT_MODELLED must also be listed under "Not modelled" in tests/emulator/README.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlparse

# The SDK refuses http:// and loopback hosts unless told this is local development.
os.environ["PIPEFY_ALLOW_INSECURE_URLS"] = "true"

import httpx  # noqa: E402  (after the environment above)
from pipefy_sdk.client import PipefyClient  # noqa: E402
from pipefy_sdk.models.attachment import Attachment, CardTarget  # noqa: E402
from pipefy_sdk.settings import PipefySettings  # noqa: E402

PIPE = "301"
TABLE = "tbl_accounts"

# SDK calls the emulator does not model, with the reason. Each is still called: it must
# fail (a call that starts to work means this list and the README are out of date).
NOT_MODELLED: dict[str, str] = {
    "add_card_comment": "comments are not modelled",
    "create_pipe": "pipe configuration (create/update/delete pipes) is not modelled",
    "create_table": "table configuration (create/update/delete tables) is not modelled",
    "create_label": "label configuration is not modelled",
    "get_webhooks": "webhooks are not modelled",
    "get_pipe_reports": "reports are not modelled",
    "upload_attachment": "the SDK's uploader only PUTs to *.amazonaws.com / *.pipefy.com "
    "hosts; the script does createPresignedUrl + its own PUT + a field update instead",
}


class Bearer(httpx.Auth):
    """A personal access token in the Authorization header."""

    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class Failed(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


class Run:
    def __init__(self, graphql_url: str, token: str) -> None:
        u = urlparse(graphql_url)
        self.base = f"{u.scheme}://{u.netloc}"
        settings = PipefySettings(base_url=self.base, allow_insecure_urls=True)
        self.client = PipefyClient(settings, auth=Bearer(token))
        self.passed: list[str] = []
        self.failed: list[str] = []

    # ------------------------------------------------------------ helpers

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return json.loads(r.read().decode())

    def state(self) -> dict[str, Any]:
        return self.get_json("/_emulator/state")

    def card_in_state(self, card_id: str) -> dict[str, Any] | None:
        return next((c for c in self.state()["cards"] if c["id"] == card_id), None)

    def record_in_state(self, record_id: str) -> dict[str, Any] | None:
        return next((r for r in self.state()["records"] if r["id"] == record_id), None)

    async def call(
        self, name: str, fn: Callable[[], Awaitable[Any]], verify: Callable[[Any], None]
    ) -> Any:
        try:
            out = await fn()
            verify(out)
        except Exception as e:  # noqa: BLE001 - every failure is reported the same way
            detail = f"{type(e).__name__}: {e}"
            print(f"FAILED {name}: {detail}", flush=True)
            if not isinstance(e, Failed):
                traceback.print_exc(file=sys.stderr)
            self.failed.append(name)
            return None
        print(f"passed {name}", flush=True)
        self.passed.append(name)
        return out

    async def not_modelled(
        self, name: str, fn: Callable[[], Awaitable[Any]], expect: str = "doesn't exist"
    ) -> None:
        """Calls `fn`, which must fail with an error mentioning `expect`."""
        try:
            await fn()
        except Exception as e:  # noqa: BLE001 - the expected outcome
            if expect not in str(e):
                print(f"FAILED {name}: failed for another reason: {e}", flush=True)
                self.failed.append(name)
                return
            print(f"not modelled {name}: {NOT_MODELLED[name]}", flush=True)
            return
        print(f"FAILED {name}: succeeded, but is declared not modelled", flush=True)
        self.failed.append(name)

    # ------------------------------------------------------------ the suite

    async def main(self) -> int:
        c = self.client
        ids: dict[str, Any] = {}

        await self.call("get_me", c.get_me, lambda me: check(
            bool(me) and me.get("email") == "ana.souza@example.com", f"me = {me}"))

        def v_pipe(r: Any) -> None:
            p = r["pipe"]
            check(p["id"] == PIPE, f"pipe id {p['id']}")
            check([ph["id"] for ph in p["phases"]][:2] == ["3011", "3012"], "phases")
        await self.call("get_pipe", lambda: c.get_pipe(PIPE), v_pipe)

        await self.call("get_pipe_members", lambda: c.get_pipe_members(PIPE), lambda r: check(
            any(m["user"]["id"] == "1001" for m in r["pipe"]["members"]), "Ana is a member"))

        # The organization attachments are uploaded for: `pipe(id) { organizationId }`.
        await self.call("get_pipe_organization_id", lambda: c.get_pipe_organization_id(PIPE),
                        lambda r: check(r == "1", f"organization {r}"))

        def v_start(r: Any) -> None:
            fs = r["start_form_fields"]
            check(any(f["id"] == "external_id" and f["required"] for f in fs), "external_id")
            att = [f["id"] for f in fs if f["type"] == "attachment"]
            check(len(att) == 1, f"one attachment field on the start form, got {att}")
            ids["card_attachment_field"] = att[0]
        await self.call("get_start_form_fields", lambda: c.get_start_form_fields(PIPE), v_start)

        await self.call("get_phase", lambda: c.get_phase("3011"), lambda r: check(
            r["phase_id"] == "3011" and r["phase_name"] == "Inbox", f"phase {r}"))

        await self.call("get_phase_fields", lambda: c.get_phase_fields("3012"), lambda r: check(
            isinstance(r.get("fields"), list) and len(r["fields"]) > 0, f"fields {r}"))

        await self.call(
            "get_phase_allowed_move_targets",
            lambda: c.get_phase_allowed_move_targets("3011"),
            lambda r: check(
                {p["id"] for p in r["phase"]["cards_can_be_moved_to_phases"]} == {"3012", "3014"},
                f"targets {r}"))

        inbox_before = await self.call(
            "get_phase_cards_count", lambda: c.get_phase_cards_count("3011"),
            lambda n: check(isinstance(n, int) and n >= 0, f"count {n}"))

        # ---- cards
        def v_create(r: Any) -> None:
            card = r["createCard"]["card"]
            ids["card"] = card["id"]
            s = self.card_in_state(card["id"])
            check(s is not None, "card is in the state")
            check(s["fields"].get("external_id") == "SDK-1", f"state fields {s['fields']}")
            check(s["phase_id"] == "3011", "created in the start phase")
            check(s.get("created_by") == "1001", "created by the token's user")
        await self.call("create_card", lambda: c.create_card(
            PIPE, {"external_id": "SDK-1", "customer_name": "Sdk Corp", "seats": 7}), v_create)
        card = ids.get("card")
        if card is None:
            return self.finish()

        if isinstance(inbox_before, int):
            await self.call("get_phase_cards_count (after create)",
                            lambda: c.get_phase_cards_count("3011"),
                            lambda n: check(n == inbox_before + 1, f"{inbox_before} -> {n}"))

        def v_get(r: Any) -> None:
            cd = r["card"]
            check(cd["id"] == card, f"id {cd.get('id')}")
            # No title was sent: the first start-form field's value is the title.
            check(cd["title"] == "SDK-1", f"title {cd.get('title')}")
            names = {f["name"]: f["value"] for f in cd.get("fields") or []}
            check(names.get("External ID") == "SDK-1", f"fields {names}")
        await self.call("get_card", lambda: c.get_card(card, include_fields=True), v_get)

        await self.call("get_cards", lambda: c.get_cards(PIPE, {"title": "SDK"}, True, first=10),
                        lambda r: check(
                            [e["node"]["id"] for e in r["cards"]["edges"]] == [card],
                            f"cards {r}"))

        await self.call("get_records", lambda: c.get_records(PIPE, include_fields=True, first=50),
                        lambda r: check(
                            card in [e["node"]["id"] for e in r["records"]["edges"]]
                            and r["records"]["totalCount"] >= 1, "records lists the card"))

        await self.call("find_cards", lambda: c.find_cards(PIPE, "external_id", "SDK-1"),
                        lambda r: check(
                            [e["node"]["id"] for e in r["findCards"]["edges"]] == [card],
                            f"findCards {r}"))

        await self.call("get_phase_cards", lambda: c.get_phase_cards("3011", first=50),
                        lambda r: check(
                            card in [e["node"]["id"] for e in r["phase"]["cards"]["edges"]],
                            f"phase cards {r}"))

        def v_update_attr(r: Any) -> None:
            s = self.card_in_state(card)
            check(s["labels"] == ["501"] or len(s["labels"]) == 1, f"labels {s['labels']}")
            check(s["assignees"] == ["1002"], f"assignees {s['assignees']}")
            check(s["due_date"] == "2030-01-02T03:04:05Z", f"due {s['due_date']}")
        labels = await self._pipe_label_ids()
        await self.call("update_card (attributes)", lambda: c.update_card(
            card, title="Renamed", assignee_ids=["1002"], label_ids=labels[:1],
            due_date="2030-01-02T03:04:05Z"), v_update_attr)

        def v_update_fields(r: Any) -> None:
            u = r["updateFieldsValues"]
            check(u["success"] is True and not u.get("userErrors"), f"payload {u}")
            s = self.card_in_state(card)
            check(s["fields"].get("seats") == 12, f"seats {s['fields'].get('seats')}")
            check(s["fields"].get("plan") == "Pro", f"plan {s['fields'].get('plan')}")
        await self.call("update_card (field_updates)", lambda: c.update_card(
            card, field_updates=[{"field_id": "seats", "value": 12},
                                 {"field_id": "plan", "value": "Pro"}]), v_update_fields)

        def v_ucf(r: Any) -> None:
            check(r["updateCardField"]["success"] is True, f"payload {r}")
            s = self.card_in_state(card)
            check(s["fields"].get("customer_name") == "Sdk Corp II", "customer_name")
        await self.call("update_card_field", lambda: c.update_card_field(
            card, "customer_name", "Sdk Corp II"), v_ucf)

        def v_fill(r: Any) -> None:
            s = self.card_in_state(card)
            check(s["fields"].get("kickoff_notes") == "filled by the SDK",
                  f"fields {s['fields']}")
        phase_field = await self._editable_phase_field("3012")
        if phase_field is not None:
            await self.call("fill_card_phase_fields", lambda: c.fill_card_phase_fields(
                card, "3012", {phase_field: "filled by the SDK", "no_such_field": "x"}),
                lambda r: (check("no_such_field" in (r.get("skipped_field_ids") or []),
                                 f"skipped {r}"),
                           check(self.card_in_state(card)["fields"].get(phase_field)
                                 == "filled by the SDK", "phase field written")))
        else:
            self.failed.append("fill_card_phase_fields")
            print("FAILED fill_card_phase_fields: phase 3012 has no text field", flush=True)

        await self.call("move_card_to_phase", lambda: c.move_card_to_phase(card, "3012"),
                        lambda r: (check("moveCardToPhase" in r, f"payload {r}"),
                                   check(self.card_in_state(card)["phase_id"] == "3012",
                                         "state")))

        await self.call("get_card_relations", lambda: c.get_card_relations(card),
                        lambda r: check(r["card"]["parent_relations"] == []
                                        and r["card"]["child_relations"] == [], f"rel {r}"))

        # ---- attachments (createPresignedUrl, our own PUT, the field write)
        await self._attachments(card, ids)

        await self.call("delete_card", lambda: c.delete_card(card), lambda r: (
            check(r["deleteCard"]["success"] is True, f"payload {r}"),
            check(self.card_in_state(card) is None, "card gone from the state")))

        # ---- tables
        await self.call("get_table", lambda: c.get_table(TABLE), lambda r: check(
            r["table"]["id"] == TABLE
            and any(f["id"] == "code" for f in r["table"]["table_fields"]), f"table {r}"))
        await self.call("get_tables", lambda: c.get_tables([TABLE]), lambda r: check(
            [t["id"] for t in r["tables"]] == [TABLE], f"tables {r}"))

        def v_ctr(r: Any) -> None:
            rec = r["createTableRecord"]["table_record"]
            ids["record"] = rec["id"]
            s = self.record_in_state(rec["id"])
            check(s is not None and s["fields"].get("code") == "SDK-R1", f"state {s}")
        await self.call("create_table_record", lambda: c.create_table_record(
            TABLE, {"code": "SDK-R1", "name": "Sdk record"}), v_ctr)
        rec = ids.get("record")
        if rec is not None:
            await self.call("get_table_record", lambda: c.get_table_record(rec),
                            lambda r: check(r["table_record"]["id"] == rec, f"record {r}"))
            await self.call("get_table_records", lambda: c.get_table_records(TABLE, first=2),
                            lambda r: check(
                                len(r["table_records"]["edges"]) == 2
                                and r["table_records"]["pageInfo"]["hasNextPage"] is True,
                                f"page {r}"))
            await self.call("find_records", lambda: c.find_records(TABLE, "code", "SDK-R1"),
                            lambda r: check(
                                [e["node"]["id"] for e in r["findRecords"]["edges"]] == [rec],
                                f"found {r}"))
            await self.call("update_table_record", lambda: c.update_table_record(
                rec, {"title": "Sdk record (renamed)", "due_date": "2031-05-06T07:08:09Z"}),
                lambda r: check(self.record_in_state(rec)["due_date"] == "2031-05-06T07:08:09Z",
                                "due date in the state"))
            await self.call("set_table_record_field_value",
                            lambda: c.set_table_record_field_value(rec, "region", "Europe"),
                            lambda r: check(
                                self.record_in_state(rec)["fields"].get("region") == "Europe",
                                f"state {self.record_in_state(rec)}"))
            await self._record_attachment(rec, ids)
            await self.call("delete_table_record", lambda: c.delete_table_record(rec),
                            lambda r: check(self.record_in_state(rec) is None, "record gone"))

        # ---- organisations and searches
        await self.call("list_organizations", c.list_organizations, lambda r: check(
            [o["id"] for o in r] == ["1"], f"orgs {r}"))
        await self.call("get_organization", lambda: c.get_organization("1"), lambda r: check(
            r["id"] == "1" and r["pipesCount"] == 2, f"org {r}"))
        await self.call("search_pipes", lambda: c.search_pipes("onboarding"), lambda r: check(
            PIPE in json.dumps(r) and "302" not in [p.get("id") for o in r.get("organizations", [])
                                                    for p in o.get("pipes", [])], f"pipes {r}"))
        await self.call("search_tables", lambda: c.search_tables("Accounts"), lambda r: check(
            TABLE in json.dumps(r), f"tables {r}"))

        # ---- what is not modelled
        await self.not_modelled("add_card_comment", lambda: c.add_card_comment("900004", "hi"))
        await self.not_modelled("create_pipe", lambda: c.create_pipe("New pipe", "1"))
        await self.not_modelled("create_table", lambda: c.create_table("New table", "1"))
        await self.not_modelled("create_label", lambda: c.create_label(PIPE, "New", "#ff0000"))
        await self.not_modelled("get_webhooks", lambda: c.get_webhooks(PIPE))
        await self.not_modelled("get_pipe_reports", lambda: c.get_pipe_reports(
            "7b1e56ba-62b7-4b61-8574-7a0861ce84d4"))
        return self.finish()

    async def _pipe_label_ids(self) -> list[str]:
        r = await self.client.get_pipe(PIPE)
        labels = r["pipe"].get("labels") or []
        return [str(x["id"]) for x in labels] or ["501"]

    async def _editable_phase_field(self, phase: str) -> str | None:
        r = await self.client.get_phase_fields(phase)
        for f in r.get("fields", []):
            if f.get("type") in ("short_text", "long_text") and f.get("editable", True):
                return f["id"]
        return None

    def put(self, url: str, body: bytes, content_type: str) -> int:
        req = urllib.request.Request(url, data=body, method="PUT")
        req.add_header("Content-Type", content_type)
        req.add_header("Content-Length", str(len(body)))
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    async def _attachments(self, card: str, ids: dict[str, Any]) -> None:
        c = self.client
        body = b"hello from the SDK conformance suite\n"
        target: dict[str, Any] = {}

        def v_presign(t: Any) -> None:
            target.update(t)
            check(t["storage_path"].startswith("orgs/"), f"path {t['storage_path']}")
            check(t["expires_in_seconds"] == 300, f"expires {t['expires_in_seconds']}")
            check(urlparse(t["upload_url"]).path.lstrip("/") == t["storage_path"],
                  "the storage path is the URL's path")
            ups = self.get_json("/_emulator/uploads")
            mine = [u for u in ups if u["path"] == t["storage_path"]]
            check(len(mine) == 1 and not mine[0]["uploaded"], f"uploads {ups}")
        await self.call("create_attachment_presigned_url", lambda: c.create_attachment_presigned_url(
            organization_id="1", file_name="notes.txt", content_type="text/plain",
            content_length=len(body)), v_presign)
        if not target:
            return
        # The SDK's own uploader refuses the emulator's host, so the bytes go up here.
        wrong = self.put(target["upload_url"], body + b"x", "text/plain")
        check_ok = wrong in (400, 403)
        status = self.put(target["upload_url"], body, "text/plain")
        if not check_ok or status != 200:
            print(f"FAILED attachment PUT: wrong length -> {wrong}, right -> {status}", flush=True)
            self.failed.append("attachment PUT")
            return
        field = ids.get("card_attachment_field")
        path = target["storage_path"]

        def v_att(r: Any) -> None:
            s = self.card_in_state(card)
            check(s["fields"].get(field) == [path], f"state {s['fields'].get(field)}")
            ups = {u["path"]: u for u in self.get_json("/_emulator/uploads")}
            check(ups[path]["uploaded"] and ups[path]["size"] == len(body), f"upload {ups}")
        await self.call("update_card_field (attachment path)",
                        lambda: c.update_card_field(card, field, [path]), v_att)

        with tempfile.TemporaryDirectory() as d:
            local = Path(d) / "sdk.txt"
            local.write_bytes(body)
            await self.not_modelled("upload_attachment", lambda: c.upload_attachment(
                Attachment(path=local), organization_id="1",
                target=CardTarget(card_id=card, field_id=field)), expect="amazonaws")

    async def _record_attachment(self, rec: str, ids: dict[str, Any]) -> None:
        c = self.client
        t = await c.get_table(TABLE)
        att = [f["id"] for f in t["table"]["table_fields"] if f["type"] == "attachment"]
        body = b"record bytes"
        target = await c.create_attachment_presigned_url(
            organization_id="1", file_name="record.bin", content_type="application/octet-stream",
            content_length=len(body))
        status = self.put(target["upload_url"], body, "application/octet-stream")

        def v(r: Any) -> None:
            check(len(att) == 1, f"one attachment field on the table, got {att}")
            check(status == 200, f"PUT status {status}")
            s = self.record_in_state(rec)
            check(s["fields"].get(att[0]) == [target["storage_path"]], f"state {s}")
        await self.call("set_table_record_field_value (attachment path)",
                        lambda: c.set_table_record_field_value(
                            rec, att[0] if att else "missing", [target["storage_path"]]), v)

    def finish(self) -> int:
        print(f"summary: {len(self.passed)} passed, {len(self.failed)} failed", flush=True)
        return 1 if self.failed else 0


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: conformance.py <graphql url> [token]", file=sys.stderr)
        return 2
    token = sys.argv[2] if len(sys.argv) > 2 else "demo-token"
    return asyncio.run(Run(sys.argv[1], token).main())


if __name__ == "__main__":
    sys.exit(main())
