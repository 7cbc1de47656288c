"""The amoCRM sandbox: API v4 events, call notes, users, leads/contacts, pipelines and user
groups, and the recordings.

Answers what `amocrm.AmoClient` asks in a cycle and in `profiles`. Recordings are served
without auth under `/recordings/`, as telephony hosts do. `add_call(at)` adds the next of
`canned.LIVE_CALLS` (in turn, each time with fresh ids, a new phone number (an outgoing
call: the one of the call before it, which it returns) and its recording) as an event
created at `at`: `demo --serve` grows the account while it runs.
"""

from __future__ import annotations

from typing import Any

from salesbot_poller.sandbox.canned import (
    ACCOUNT,
    CALLS,
    CONTACTS,
    GROUPS,
    LEADS,
    LIVE_CALLS,
    PIPELINES,
    USERS,
    make_wav,
)
from salesbot_poller.sandbox.http import LoopbackServer, Request, Response, json_response

PLURAL = {"lead": "leads", "contact": "contacts"}
NAMES = {"leads": LEADS, "contacts": CONTACTS}


class SandboxAmoCRM(LoopbackServer):
    """amoCRM with the canned calls, created `seconds before now` relative to `now`."""

    def __init__(self, token: str, now: int) -> None:
        super().__init__()
        self.token = token
        self.events: list[dict[str, Any]] = []
        self.notes: dict[str, dict[int, dict[str, Any]]] = {"leads": {}, "contacts": {}}
        self.recordings: dict[str, bytes] = {}
        self.added = 0  # calls added by `add_call`
        self._wavs: dict[int, bytes] = {}  # by duration: the added calls share them
        for event_id, kind, entity, entity_id, note_id, ago, params in CALLS:
            self._put(event_id, kind, str(entity), entity_id, note_id, now - int(ago), params)

    def add_call(self, at: int) -> dict[str, object]:
        """Add the next live call (see the module contract); returns its note's params."""
        with self.lock:
            number = self.added
            self.added += 1
        kind, entity, entity_id, duration, status, responsible = LIVE_CALLS[number % len(LIVE_CALLS)]
        note_id = at * 100 + number % 100  # unique across runs sharing a database
        # An outgoing call returns the call before it (a missed one, in LIVE_CALLS): same number.
        caller = number - 1 if kind == "outgoing_call" and number else number
        params: dict[str, object] = {
            "duration": duration, "phone": f"+7999{1110011 + caller:07d}", "call_status": status,
            "source": "DemoPBX", "responsible": responsible, "recording": f"rec-{note_id}.wav" if duration else None,
        }  # fmt: skip
        self._put(f"01JDEMOLIVE{at}{number:05d}", kind, entity, entity_id, note_id, at, params)
        return params

    def _put(
        self, event_id: str, kind: str, entity: str, entity_id: int, note_id: int, at: int, params: dict[str, object]
    ) -> None:
        recording = params["recording"]
        note = {
            "id": note_id, "entity_id": entity_id, "note_type": "call_in" if kind == "incoming_call" else "call_out",
            "responsible_user_id": params["responsible"], "created_at": at,
            "params": {
                "uniq": f"demo-{note_id}", "duration": params["duration"], "source": params["source"],
                "phone": params["phone"], "call_status": params["call_status"],
                "call_responsible": params["responsible"],
                "link": None,  # set per answer by _public: the URL needs the bound port
            },
            "_recording": recording,
        }  # fmt: skip
        event = {
            "id": event_id, "type": kind, "entity_id": entity_id, "entity_type": entity,
            "created_by": 0, "created_at": at, "account_id": ACCOUNT["id"],
            "value_after": [{"note": {"id": note_id}}], "value_before": [],
        }  # fmt: skip
        with self.lock:
            if recording:
                duration = int(str(params["duration"]))
                if duration not in self._wavs:
                    self._wavs[duration] = make_wav(duration)
                self.recordings[str(recording)] = self._wavs[duration]
            self.notes[PLURAL[entity]][note_id] = note
            self.events.append(event)

    def recording_url(self, name: str) -> str:
        return f"{self.base_url}/recordings/{name}"

    def route(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        if path.startswith("/recordings/"):
            data = self.recordings.get(path.removeprefix("/recordings/"))
            if data is None:
                return Response(404, b"not found", {"Content-Type": "text/plain"})
            return Response(200, data, {"Content-Type": "audio/wav"})
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return json_response({"title": "Unauthorized", "status": 401, "detail": "Invalid token"}, 401)
        if path == "/api/v4/account":
            groups = [{"id": i, "name": n} for i, n in GROUPS.items()]
            return json_response(dict(ACCOUNT, _embedded={"users_groups": groups}))
        if path == "/api/v4/leads/pipelines":
            return json_response({"_embedded": {"pipelines": [
                {"id": i, "name": name, "_embedded": {"statuses": [{"id": s, "name": t} for s, t in statuses.items()]}}
                for i, (name, statuses) in PIPELINES.items()
            ]}})  # fmt: skip
        if path == "/api/v4/events":
            return self._events(request)
        if path == "/api/v4/users":
            users = [
                {"id": i, "name": n, "email": f"user{i}@example.com", "rights": {"group_id": 0}}
                for i, n in USERS.items()
            ]
            return self._page("users", users, request)
        parts = path.split("/")  # ['', 'api', 'v4', plural, ('notes')]
        if len(parts) == 5 and parts[4] == "notes" and parts[3] in self.notes:
            wanted = {int(i) for i in request.query.get("filter[id][]", [])}
            with self.lock:
                stored = list(self.notes[parts[3]].items())
            notes = [self._public(n) for i, n in stored if not wanted or i in wanted]
            return self._page("notes", notes, request)
        if len(parts) == 4 and parts[3] in NAMES:
            wanted = {int(i) for i in request.query.get("filter[id][]", [])}
            items = [{"id": i, "name": n} for i, n in NAMES[parts[3]].items() if not wanted or i in wanted]
            return self._page(parts[3], items, request)
        return json_response({"title": "Not Found", "status": 404, "detail": path}, 404)

    def _public(self, note: dict[str, Any]) -> dict[str, Any]:
        recording = note["_recording"]
        shown = {k: v for k, v in note.items() if k != "_recording"}
        shown["params"] = dict(note["params"], link=self.recording_url(recording) if recording else None)
        return shown

    def _events(self, request: Request) -> Response:
        since = int(request.param("filter[created_at][from]") or 0)
        until = int(request.param("filter[created_at][to]") or 2**62)
        types = set((request.param("filter[type]") or "incoming_call,outgoing_call").split(","))
        with self.lock:
            stored = list(self.events)
        events = [e for e in stored if since <= e["created_at"] <= until and e["type"] in types]
        return self._page("events", events, request)

    @staticmethod
    def _page(key: str, items: list[dict[str, Any]], request: Request) -> Response:
        """One page of `items` (204 when empty, as amoCRM answers)."""
        page = int(request.param("page") or 1)
        limit = int(request.param("limit") or 250)
        chunk = items[(page - 1) * limit : page * limit]
        if not chunk:
            return Response(204)
        links: dict[str, Any] = {"self": {"href": f"?page={page}"}}
        if page * limit < len(items):
            links["next"] = {"href": f"?page={page + 1}"}
        return json_response({"_page": page, "_links": links, "_embedded": {key: chunk}})
