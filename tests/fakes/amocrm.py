"""A fake amoCRM API v4 account host (see /work/shared/amocrm-api.md for the wire facts)."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any
from urllib.parse import urlencode

from .base import JSON, FakeServer, RecordedRequest, Reply, form_params, json_reply, text_reply

PLURALS = {"lead": "leads", "contact": "contacts", "company": "companies", "customer": "customers"}
ENTITY_PLURALS = tuple(PLURALS.values())
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_PL = "(leads|contacts|companies|customers)"


def _b32(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        out.append(_CROCKFORD[digit])
    return "".join(reversed(out))


def multi(query: dict[str, list[str]], name: str) -> list[str]:
    """Values of a filter in any form amoCRM accepts: `name=1,2`, `name[]=1&name[]=2`,
    `name[0]=1`."""
    values: list[str] = []
    for key, vals in query.items():
        if key == name or key == name + "[]" or re.fullmatch(re.escape(name) + r"\[\d+\]", key):
            for v in vals:
                values.extend(p.strip() for p in v.split(",") if p.strip())
    return values


def problem(status: int, title: str, detail: str, **extra: Any) -> Reply:
    """An `application/problem+json` error as amoCRM sends it."""
    body = {"title": title, "type": f"https://httpstatus.es/{status}", "status": status, "detail": detail, **extra}
    return json_reply(body, status, "application/problem+json")


def make_jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT-shaped token (amoCRM access and long-lived tokens are JWTs)."""

    def part(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'typ': 'JWT', 'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


class RawItem(dict[str, Any]):
    """A poisoned list item: served as `raw`, the bytes as they are (JSON nested 100,000 deep,
    bytes that are not JSON); its dict holds only what the fake filters and sorts it by."""

    def __init__(self, fields: JSON, raw: bytes) -> None:
        super().__init__(fields)
        self.raw = raw


_ITEMS = "@@items@@"  # where a page's items go when one of them must be served as raw bytes


class _BadRequest(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class FakeAmoCRM(FakeServer):
    """Fake amoCRM API v4. Contract:

    - Every `/api/v4/...` call needs `Authorization: Bearer <t>` with t in `valid_tokens`,
      else 401 problem+json. `POST /oauth2/access_token` checks client_id/client_secret.
    - State is public and may be edited by tests at any time (hold `lock` if the server is
      busy): `events`, `notes[(plural, note_id)]`, `users[id]`, `entities[plural][id]`,
      `account`, `users_forbidden`, `valid_tokens`, `valid_refresh_tokens`, `valid_codes`.
    - Lists are sorted, filtered and paged like amoCRM (`limit`, 1-based `page`,
      `_links.next` only when the next page has items); an empty page is 204 with no body.
    - Refresh tokens and authorization codes are strictly single use (amoCRM behaviour).
    - `rate_violations()` counts requests beyond `max_rps` in any rolling 1 s window;
      with `enforce_rate_limit` such a request gets 429 with an HTML body, no Retry-After.
    - Notes posted to `/api/v4/{plural}/notes` land in `created_notes` (and in `notes`),
      tasks posted to `/api/v4/tasks` in `tasks`.
    - `jwt_tokens`: issued access tokens are JWTs whose `exp` is now + `expires_in`.
    - `empty_from_page=N`: every list answers 204 from page N on, even after a `next` link
      (the list shrank between two requests).
    - `custom_fields[plural]`: the account's custom fields (`add_custom_field`), listed by
      `GET /api/v4/{plural}/custom_fields`. `PATCH /api/v4/leads` takes a list of leads (at
      most 250): `custom_fields_values` must name fields of the account with a value of the
      field's type (numeric: a number; date, date_time: Unix seconds), else 400;
      `tags_to_add` adds tags by name or id and keeps the lead's others; `_embedded.tags`
      replaces them all (amoCRM's documented semantics). Each accepted body lands in
      `lead_patches`.
    - `add_pipeline` / `add_group`: `GET /api/v4/leads/pipelines` (statuses embedded, not
      paged) and `GET /api/v4/account?with=users_groups` (`_embedded.users_groups`); a
      user's group is `rights.group_id`.
    - `poison_note` / `poison_event`: an item served as raw bytes in every page holding it, the
      rest of the page as usual (one poisoned item makes the whole answer unreadable).
    """

    def __init__(
        self,
        token: str = "amo-test-token",
        client_id: str = "cid",
        client_secret: str = "csecret",
        refresh_token: str = "refresh-1",
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.account: JSON = {
            "id": 31000001,
            "name": "Acme",
            "subdomain": "acme",
            "created_at": 1600000000,
            "created_by": 0,
            "updated_at": 1600000000,
            "updated_by": 0,
            "current_user_id": 0,
            "country": "RU",
            "currency": "RUB",
            "currency_symbol": "₽",
            "customers_mode": "disabled",
            "is_unsorted_on": True,
            "is_loss_reason_enabled": True,
            "is_helpbot_enabled": False,
            "is_technical_account": False,
            "contact_name_display_order": 1,
        }
        self.events: list[JSON] = []
        self.notes: dict[tuple[str, int], JSON] = {}
        self.users: dict[int, JSON] = {}
        self.entities: dict[str, dict[int, JSON]] = {p: {} for p in ENTITY_PLURALS}
        self.users_forbidden = False
        self.groups: dict[int, str] = {}
        self.pipelines: dict[int, JSON] = {}
        self.valid_tokens: set[str] = {token}
        self.valid_refresh_tokens: set[str] = {refresh_token}
        self.valid_codes: set[str] = set()
        self.issued_refresh_tokens: list[str] = []
        self.created_notes: list[JSON] = []
        self.tasks: list[JSON] = []
        self.max_rps = 7
        self.enforce_rate_limit = False
        self.jwt_tokens = False
        self.expires_in = 86400
        self.empty_from_page: int | None = None
        self.custom_fields: dict[str, list[JSON]] = {p: [] for p in ENTITY_PLURALS}
        self.lead_patches: list[list[JSON]] = []
        self._tag_seq = 0
        self._counter = 1  # generation of the initial token pair
        self._event_seq = 0
        self._violations = 0

    # test helpers --------------------------------------------------------------------------
    def add_user(self, user_id: int, name: str, email: str | None = None, group_id: int | None = None) -> JSON:
        """Add (or replace) a user as `GET /api/v4/users` lists it (`rights.group_id`: its group)."""
        user = {
            "id": user_id,
            "name": name,
            "email": email or f"user{user_id}@example.com",
            "lang": "ru",
            "rights": {"is_admin": False, "is_free": False, "is_active": True, "group_id": group_id},
        }
        self.users[user_id] = user
        return user

    def add_group(self, group_id: int, name: str) -> None:
        """A user group, listed by `GET /api/v4/account?with=users_groups`."""
        self.groups[group_id] = name

    def add_pipeline(self, pipeline_id: int, name: str, statuses: dict[int, str]) -> None:
        """A lead pipeline with its statuses, listed by `GET /api/v4/leads/pipelines`."""
        self.pipelines[pipeline_id] = {
            "id": pipeline_id,
            "name": name,
            "sort": 10 * (len(self.pipelines) + 1),
            "is_main": not self.pipelines,
            "is_unsorted_on": True,
            "is_archive": False,
            "account_id": self.account["id"],
            "_embedded": {
                "statuses": [
                    {
                        "id": sid,
                        "name": sname,
                        "sort": 10 * (i + 1),
                        "is_editable": True,
                        "pipeline_id": pipeline_id,
                        "color": "#99ccff",
                        "type": 0,
                        "account_id": self.account["id"],
                    }
                    for i, (sid, sname) in enumerate(statuses.items())
                ]
            },
        }

    def add_entity(
        self,
        entity_type: str,
        entity_id: int,
        name: str,
        responsible_user_id: int = 0,
        **extra: Any,
    ) -> JSON:
        """Add a lead/contact/company/customer (singular or plural type); `extra` fields
        (price, pipeline_id, status_id, ...) are stored as given."""
        plural = PLURALS.get(entity_type, entity_type)
        entity = {
            "id": entity_id,
            "name": name,
            "responsible_user_id": responsible_user_id,
            "created_at": 1700000000,
            "updated_at": 1700000000,
            "account_id": self.account["id"],
            **extra,
        }
        self.entities[plural][entity_id] = entity
        return entity

    def add_call(
        self,
        *,
        entity_type: str = "lead",
        entity_id: int,
        note_id: int,
        direction: str = "in",
        duration: int,
        phone: str,
        link: str | None,
        call_status: int = 4,
        created_at: int,
        responsible_user_id: int = 0,
        source: str = "MangoOfficeWidget",
        event_id: str | None = None,
        call_responsible: int | str | None = None,
        call_result: str = "",
    ) -> str:
        """Append an `incoming_call`/`outgoing_call` event and store its call note.

        `entity_type` is singular (lead, contact, company, customer). `link=None` omits
        `params.link`; `call_responsible=None` stores `responsible_user_id` there.
        Returns the event id (a 26-char lower-case ULID-like string).
        """
        if direction not in ("in", "out"):
            raise ValueError("direction must be 'in' or 'out'")
        plural = PLURALS[entity_type]
        if event_id is None:
            self._event_seq += 1
            event_id = _b32(created_at * 1000, 10) + _b32(self._event_seq, 16)
        params: JSON = {
            "uniq": f"{note_id:08x}-0000-4000-8000-{entity_id:012x}",
            "duration": duration,
            "source": source,
            "phone": phone,
            "call_result": call_result,
            "call_status": call_status,
            "call_responsible": (responsible_user_id if call_responsible is None else call_responsible),
        }
        if link is not None:
            params["link"] = link
        self.notes[(plural, note_id)] = {
            "id": note_id,
            "entity_id": entity_id,
            "created_by": 0,
            "updated_by": 0,
            "created_at": created_at,
            "updated_at": created_at,
            "responsible_user_id": responsible_user_id,
            "group_id": 0,
            "note_type": f"call_{direction}",
            "params": params,
            "account_id": self.account["id"],
        }
        self.events.append(
            {
                "id": event_id,
                "type": "incoming_call" if direction == "in" else "outgoing_call",
                "entity_id": entity_id,
                "entity_type": entity_type,
                "created_by": 0,
                "created_at": created_at,
                "value_after": [{"note": {"id": note_id}}],
                "value_before": [],
                "account_id": self.account["id"],
            }
        )
        return event_id

    def add_account_calls(self, count: int, first_at: int) -> None:
        """`count` answered calls with recordings, one a second from `first_at`, spread like a
        real account: 70 % on leads, 20 % on contacts, 10 % on companies, over 400 cards per
        type, with ids as long as real ones (they make the batched URLs long), all managed by
        user 555 "Иван Петров". Note ids are 1_200_000_000 + n, card ids 25_000_000 + n % 400.
        """
        self.add_user(555, "Иван Петров")
        for n in range(count):
            kind = "lead" if n % 10 < 7 else "contact" if n % 10 < 9 else "company"
            entity_id = 25_000_000 + n % 400
            self.add_entity(kind, entity_id, f"{kind} {entity_id}")
            self.add_call(
                entity_type=kind,
                entity_id=entity_id,
                note_id=1_200_000_000 + n,
                duration=60,
                phone="+79990000000",
                link=f"https://rec.example/{n}.mp3",
                created_at=first_at + n,
                responsible_user_id=555,
            )

    def add_custom_field(self, entity_type: str, field_id: int, name: str, field_type: str) -> JSON:
        """Add a custom field (`numeric`, `date`, `date_time`, `text`, ...) of an entity type."""
        plural = PLURALS.get(entity_type, entity_type)
        custom_field = {
            "id": field_id,
            "name": name,
            "type": field_type,
            "code": None,
            "sort": 500,
            "is_api_only": False,
            "entity_type": plural,
            "enums": None,
        }
        self.custom_fields[plural].append(custom_field)
        return custom_field

    def lead_tags(self, lead_id: int) -> list[str]:
        """The names of a lead's tags, in the order they were attached."""
        entity = self.entities["leads"][lead_id]
        return [tag["name"] for tag in (entity.get("_embedded") or {}).get("tags") or []]

    def lead_field(self, lead_id: int, field_id: int) -> Any:
        """The value of a lead's custom field (None when unset)."""
        for value in self.entities["leads"][lead_id].get("custom_fields_values") or []:
            if value["field_id"] == field_id:
                return value["values"][0]["value"]
        return None

    def set_note_link(self, entity_plural: str, note_id: int, link: str | None) -> None:
        """Set (or with None remove) a note's `params.link` and bump its `updated_at`."""
        with self.lock:
            note = self.notes[(entity_plural, note_id)]
            if link is None:
                note["params"].pop("link", None)
            else:
                note["params"]["link"] = link
            note["updated_at"] = max(int(time.time()), note["updated_at"] + 1)

    def poison_note(self, entity_plural: str, note_id: int, raw: bytes) -> None:
        """Serve note `note_id` (added before) as `raw` wherever a notes page holds it."""
        with self.lock:
            note = self.notes[(entity_plural, note_id)]
            self.notes[(entity_plural, note_id)] = RawItem(note, raw)

    def poison_event(self, raw: bytes, created_at: int, event_id: str = "01poisonedevent00000000000") -> None:
        """An incoming-call event at `created_at`, served as `raw` in every events page holding it."""
        with self.lock:
            self.events.append(RawItem({"id": event_id, "type": "incoming_call", "created_at": created_at}, raw))

    def rate_violations(self) -> int:
        """Requests that were the (max_rps+1)-th or later within a rolling 1.0 s window."""
        with self.lock:
            times = sorted(r.at for r in self.requests)
        count, start = 0, 0
        for i, t in enumerate(times):
            while t - times[start] >= 1.0:
                start += 1
            if i - start + 1 > self.max_rps:
                count += 1
        return count

    # dispatch ------------------------------------------------------------------------------
    def on_request(self, req: RecordedRequest) -> Reply | None:
        if not self.enforce_rate_limit:
            return None
        recent = [r for r in self.requests if 0 <= req.at - r.at < 1.0]
        if len(recent) > self.max_rps:
            html = (
                "<html><head><title>429 Too Many Requests</title></head><body>"
                "<center><h1>429 Too Many Requests</h1></center></body></html>"
            )
            return text_reply(html, 429, "text/html")
        return None

    def route(self, req: RecordedRequest) -> Reply:
        path = req.path.rstrip("/")
        if path == "/oauth2/access_token":
            return self._oauth(req) if req.method == "POST" else self._not_found()
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:].strip() not in self.valid_tokens:
            return problem(401, "Unauthorized", "Authorization is required or token is invalid")
        try:
            with self.lock:
                return self._api(req, path)
        except _BadRequest as exc:
            return problem(400, "Bad Request", exc.detail)
        except ValueError as exc:  # a body that is not JSON
            return problem(400, "Bad Request", f"Malformed request body: {exc}")

    def _api(self, req: RecordedRequest, path: str) -> Reply:
        get = req.method in ("GET", "HEAD")
        if get and path == "/api/v4/account":
            if "users_groups" in ",".join(req.query.get("with", [])):
                groups = [{"id": gid, "name": name, "uuid": None} for gid, name in sorted(self.groups.items())]
                return json_reply({**self.account, "_embedded": {"users_groups": groups}})
            return json_reply(self.account)
        if get and path == "/api/v4/leads/pipelines":
            pipelines = [self.pipelines[p] for p in sorted(self.pipelines)]
            return json_reply({"_total_items": len(pipelines), "_embedded": {"pipelines": pipelines}})
        if get and path == "/api/v4/events":
            return self._events(req)
        if get and path == "/api/v4/users":
            if self.users_forbidden:
                return problem(403, "Forbidden", "Access denied: admin rights required")
            users = sorted(self.users.values(), key=lambda u: u["id"])
            return self._page(req, "users", users, max_limit=250)
        if get and (m := re.fullmatch(r"/api/v4/users/(\d+)", path)):
            if self.users_forbidden:
                return problem(403, "Forbidden", "Access denied: admin rights required")
            user = self.users.get(int(m[1]))
            return json_reply(user) if user else Reply(204)
        if m := re.fullmatch(rf"/api/v4/{_PL}/notes", path):
            return self._notes(req, m[1], None) if get else self._post_notes(req, m[1], None)
        if m := re.fullmatch(rf"/api/v4/{_PL}/(\d+)/notes", path):
            entity_id = int(m[2])
            return self._notes(req, m[1], entity_id) if get else self._post_notes(req, m[1], entity_id)
        if get and (m := re.fullmatch(rf"/api/v4/{_PL}(?:/(\d+))?/notes/(\d+)", path)):
            note = self.notes.get((m[1], int(m[3])))
            if note is None or (m[2] is not None and note["entity_id"] != int(m[2])):
                return Reply(204)
            return json_reply(note)
        if get and (m := re.fullmatch(rf"/api/v4/{_PL}", path)):
            wanted = self._ints(req, "filter[id]")
            items = [e for i, e in sorted(self.entities[m[1]].items()) if not wanted or i in wanted]
            return self._page(req, m[1], items, max_limit=250)
        if get and (m := re.fullmatch(rf"/api/v4/{_PL}/(\d+)", path)):
            entity = self.entities[m[1]].get(int(m[2]))
            return json_reply(entity) if entity else Reply(204)
        if req.method == "POST" and path == "/api/v4/tasks":
            return self._post_tasks(req)
        if get and (m := re.fullmatch(rf"/api/v4/{_PL}/custom_fields", path)):
            return self._page(req, "custom_fields", self.custom_fields[m[1]], max_limit=250)
        if req.method == "PATCH" and path == "/api/v4/leads":
            return self._patch_leads(req)
        return self._not_found()

    def _not_found(self) -> Reply:
        return problem(404, "Not Found", "Unknown route")

    # lists ---------------------------------------------------------------------------------
    def _page(
        self, req: RecordedRequest, key: str, items: list[JSON], max_limit: int, default_limit: int = 50
    ) -> Reply:
        limit = self._int(req, "limit", default_limit)
        page = self._int(req, "page", 1)
        if not 1 <= limit <= max_limit:
            raise _BadRequest(f"limit must be between 1 and {max_limit}")
        if page < 1:
            raise _BadRequest("page must be a positive number")
        chunk = items[(page - 1) * limit : page * limit]
        if not chunk or (self.empty_from_page is not None and page >= self.empty_from_page):
            return Reply(204)
        links = {"self": {"href": self._href(req, page)}}
        if len(items) > page * limit:
            links["next"] = {"href": self._href(req, page + 1)}
        if page > 1:
            links["prev"] = {"href": self._href(req, page - 1)}
        if not any(isinstance(item, RawItem) for item in chunk):
            return json_reply({"_page": page, "_links": links, "_embedded": {key: chunk}})
        reply = json_reply({"_page": page, "_links": links, "_embedded": {key: _ITEMS}})
        parts = [item.raw if isinstance(item, RawItem) else json_reply(item).body for item in chunk]
        reply.body = reply.body.replace(json.dumps(_ITEMS).encode(), b"[" + b",".join(parts) + b"]", 1)
        return reply

    @staticmethod
    def _int(req: RecordedRequest, name: str, default: int) -> int:
        raw = req.param(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise _BadRequest(f"{name} must be an integer") from None

    @staticmethod
    def _ints(req: RecordedRequest, name: str) -> set[int]:
        try:
            return {int(v) for v in multi(req.query, name)}
        except ValueError:
            raise _BadRequest(f"{name} must hold integers") from None

    def _href(self, req: RecordedRequest, page: int) -> str:
        query = {k: v for k, v in req.query.items() if k != "page"}
        query["page"] = [str(page)]
        return f"{self.base_url}{req.path}?{urlencode(query, doseq=True)}"

    def _events(self, req: RecordedRequest) -> Reply:
        types = set(multi(req.query, "filter[type]"))
        lo = self._int(req, "filter[created_at][from]", 0)
        hi = self._int(req, "filter[created_at][to]", 2**62)
        events = sorted(
            (e for e in self.events if (not types or e["type"] in types) and lo <= e["created_at"] <= hi),
            key=lambda e: (e["created_at"], e["id"]),
        )
        return self._page(req, "events", events, max_limit=100)

    def _notes(self, req: RecordedRequest, plural: str, entity_id: int | None) -> Reply:
        ids = self._ints(req, "filter[id]")
        types = set(multi(req.query, "filter[note_type]"))
        entity_ids = self._ints(req, "filter[entity_id]")
        if entity_id is not None:
            entity_ids = {entity_id}
        lo = self._int(req, "filter[updated_at][from]", 0)
        hi = self._int(req, "filter[updated_at][to]", 2**62)
        notes = [
            n
            for (p, nid), n in self.notes.items()
            if p == plural
            and (not ids or nid in ids)
            and (not types or n["note_type"] in types)
            and (not entity_ids or n["entity_id"] in entity_ids)
            and lo <= n["updated_at"] <= hi
        ]
        order_key, desc = "id", False
        for key in ("id", "updated_at"):
            if (direction := req.param(f"order[{key}]")) is not None:
                order_key, desc = key, direction.lower() == "desc"
        notes.sort(key=lambda n: (n[order_key], n["id"]), reverse=desc)
        return self._page(req, "notes", notes, max_limit=250)

    # writes --------------------------------------------------------------------------------
    def _post_notes(self, req: RecordedRequest, plural: str, entity_id: int | None) -> Reply:
        if req.method != "POST":
            return self._not_found()
        items = req.json()
        if not isinstance(items, list) or not items:
            raise _BadRequest("Request body must be a non-empty JSON array")
        answer = []
        now = int(time.time())
        for i, item in enumerate(items):
            target = item.get("entity_id", entity_id)
            if not isinstance(target, int) or "note_type" not in item:
                raise _BadRequest(f"[{i}]: entity_id and note_type are required")
            note_id = max([nid for _, nid in self.notes] + [900000000]) + 1
            note = {
                "id": note_id,
                "entity_id": target,
                "created_by": 0,
                "updated_by": 0,
                "created_at": now,
                "updated_at": now,
                "responsible_user_id": 0,
                "group_id": 0,
                "note_type": item["note_type"],
                "params": item.get("params", {}),
                "account_id": self.account["id"],
            }
            self.notes[(plural, note_id)] = note
            self.created_notes.append({"entity_plural": plural, **note})
            answer.append({"id": note_id, "entity_id": target, "request_id": str(item.get("request_id", i))})
        return json_reply({"_links": {"self": {"href": self.url(req.path)}}, "_embedded": {"notes": answer}})

    def _post_tasks(self, req: RecordedRequest) -> Reply:
        items = req.json()
        if not isinstance(items, list) or not items:
            raise _BadRequest("Request body must be a non-empty JSON array")
        answer = []
        for i, item in enumerate(items):
            if "text" not in item or "complete_till" not in item:
                raise _BadRequest(f"[{i}]: text and complete_till are required")
            task_id = 800000000 + len(self.tasks) + 1
            self.tasks.append({"id": task_id, **item})
            answer.append({"id": task_id, "request_id": str(item.get("request_id", i))})
        return json_reply({"_embedded": {"tasks": answer}})

    def _patch_leads(self, req: RecordedRequest) -> Reply:
        items = req.json()
        if not isinstance(items, list) or not items or len(items) > 250:
            raise _BadRequest("Request body must be a JSON array of 1 to 250 leads")
        fields = {f["id"]: f for f in self.custom_fields["leads"]}
        for i, item in enumerate(items):  # validated whole before anything changes
            if not isinstance(item, dict) or item.get("id") not in self.entities["leads"]:
                raise _BadRequest(f"[{i}].id: no such lead")
            for value in item.get("custom_fields_values") or []:
                field = fields.get(value.get("field_id"))
                if field is None:
                    raise _BadRequest(f"[{i}].custom_fields_values: no field {value.get('field_id')}")
                raw = value["values"][0]["value"]
                wanted: type | tuple[type, ...] = (int, float) if field["type"] == "numeric" else int
                if isinstance(raw, bool) or not isinstance(raw, wanted):
                    raise _BadRequest(f"[{i}].custom_fields_values: bad value for a {field['type']} field")
        answer = []
        now = int(time.time())
        for i, item in enumerate(items):
            lead = self.entities["leads"][item["id"]]
            values = {v["field_id"]: v for v in lead.get("custom_fields_values") or []}
            for value in item.get("custom_fields_values") or []:
                values[value["field_id"]] = {
                    "field_id": value["field_id"],
                    "field_name": fields[value["field_id"]]["name"],
                    "field_type": fields[value["field_id"]]["type"],
                    "values": value["values"],
                }
            if values:
                lead["custom_fields_values"] = list(values.values())
            embedded = lead.setdefault("_embedded", {})
            if "tags" in (item.get("_embedded") or {}):
                embedded["tags"] = [self._tag(t) for t in item["_embedded"]["tags"] or []]
            tags = embedded.setdefault("tags", [])
            for tag in item.get("tags_to_add") or []:
                if all(t["name"] != tag.get("name") and t["id"] != tag.get("id") for t in tags):
                    tags.append(self._tag(tag))
            lead["updated_at"] = now
            answer.append({"id": lead["id"], "updated_at": now, "request_id": str(item.get("request_id", i))})
        self.lead_patches.append(items)
        return json_reply({"_links": {"self": {"href": self.url(req.path)}}, "_embedded": {"leads": answer}})

    def _tag(self, tag: JSON) -> JSON:
        if "name" not in tag:
            return {"id": tag["id"], "name": f"tag {tag['id']}", "color": None}
        self._tag_seq += 1
        return {"id": 300000 + self._tag_seq, "name": tag["name"], "color": None}

    # OAuth ---------------------------------------------------------------------------------
    def _oauth(self, req: RecordedRequest) -> Reply:
        try:
            params, _ = form_params(req)
        except ValueError:
            return self._oauth_error(400, "Bad Request", "Malformed body", "Invalid request")
        with self.lock:
            if params.get("client_id") != self.client_id or params.get("client_secret") != self.client_secret:
                return self._oauth_error(
                    401, "Unauthorized", "Client authentication failed", "Client authentication failed"
                )
            grant = params.get("grant_type")
            if grant == "refresh_token":
                pool, value = self.valid_refresh_tokens, params.get("refresh_token", "")
            elif grant == "authorization_code":
                pool, value = self.valid_codes, params.get("code", "")
            else:
                return self._oauth_error(
                    400, "Bad Request", "Unsupported grant type", "Check the `grant_type` parameter"
                )
            if value not in pool:
                hint = "Token has been revoked" if grant == "refresh_token" else "Authorization code has been revoked"
                return self._oauth_error(400, "Bad Request", "The provided authorization grant is invalid", hint)
            pool.discard(value)
            self._counter += 1
            access, refresh = f"access-{self._counter}", f"refresh-{self._counter}"
            if self.jwt_tokens:
                access = make_jwt({"jti": access, "exp": int(time.time()) + self.expires_in})
            self.valid_tokens.add(access)
            self.valid_refresh_tokens.add(refresh)
            self.issued_refresh_tokens.append(refresh)
        return json_reply(
            {"token_type": "Bearer", "expires_in": self.expires_in, "access_token": access, "refresh_token": refresh}
        )

    @staticmethod
    def _oauth_error(status: int, title: str, detail: str, hint: str) -> Reply:
        return json_reply(
            {
                "title": title,
                "type": f"https://httpstatus.es/{status}",
                "status": status,
                "detail": detail,
                "hint": hint,
            },
            status,
        )
