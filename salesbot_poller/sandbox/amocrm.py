"""The amoCRM sandbox: API v4 events, call notes, users, leads/contacts, and the recordings.

Answers what `amocrm.AmoClient` asks in one cycle. Recordings are served without auth under
`/recordings/`, as telephony hosts do.
"""

from __future__ import annotations

from typing import Any

from salesbot_poller.sandbox.canned import ACCOUNT, CALLS, CONTACTS, LEADS, USERS, make_wav
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
        for event_id, kind, entity, entity_id, note_id, ago, params in CALLS:
            self.events.append({
                "id": event_id, "type": kind, "entity_id": entity_id, "entity_type": entity,
                "created_by": 0, "created_at": now - int(ago), "account_id": ACCOUNT["id"],
                "value_after": [{"note": {"id": note_id}}], "value_before": [],
            })  # fmt: skip
            recording = params["recording"]
            if recording:
                self.recordings[str(recording)] = make_wav(int(params["duration"]))
            self.notes[PLURAL[str(entity)]][int(note_id)] = {
                "id": note_id, "entity_id": entity_id, "note_type": "call_in",
                "responsible_user_id": params["responsible"], "created_at": now - int(ago),
                "params": {
                    "uniq": f"demo-{note_id}", "duration": params["duration"], "source": params["source"],
                    "phone": params["phone"], "call_status": params["call_status"],
                    "call_responsible": params["responsible"],
                    "link": None,  # set per answer by _public: the URL needs the bound port
                },
                "_recording": recording,
            }  # fmt: skip

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
            return json_response(ACCOUNT)
        if path == "/api/v4/events":
            return self._events(request)
        if path == "/api/v4/users":
            users = [{"id": i, "name": n, "email": f"user{i}@example.com"} for i, n in USERS.items()]
            return self._page("users", users, request)
        parts = path.split("/")  # ['', 'api', 'v4', plural, ('notes')]
        if len(parts) == 5 and parts[4] == "notes" and parts[3] in self.notes:
            wanted = {int(i) for i in request.query.get("filter[id][]", [])}
            notes = [self._public(n) for i, n in self.notes[parts[3]].items() if not wanted or i in wanted]
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
        events = [e for e in self.events if since <= e["created_at"] <= until and e["type"] in types]
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
