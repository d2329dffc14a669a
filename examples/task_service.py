"""A sample task service for Steadfast's demo and tests: the seed's domain over HTTP.

Routes: POST /records, DELETE /records/{id}; POST /capacity/reserve, POST /capacity/release;
POST /notices, DELETE /notices/{id}; POST /dashboard; GET /healthz and /healthz/{name};
POST /alerts, /approvals, /deploy; GET and POST /echo/{name}.

`/echo/{name}` is the careless service the Secret tests need: it answers 200 with the request's headers in the
body (`{"headers": {...}}`), as an `X-Echo-Authorization` header, and base64-encoded as the reason phrase;
`?to=URL` answers 302 to URL instead. Its deliveries record the headers received.

Effects answer with the IDs they created, as real services do: `POST /records` -> {"id"} (the body's `id`
if given, else `rec-N`), `POST /capacity/reserve` -> {"reservationId": "res-N"} (released by
`POST /capacity/release` with that `reservationId`), `POST /notices` -> {"noticeId": "ntc-N"}. `GET /_stats`
lists what is live (records, reservations, notices), so a test sees that compensations undid exactly what
the steps made. Health checks answer {"status": "UP"}.

It deduplicates by `Idempotency-Key` (a repeated key gets the first answer and changes nothing), counts
raw deliveries and applied effects, and injects faults:
- a request with the header `X-Fail: always` fails with 500;
- `POST /_faults` {"route": "POST /notices", "fail": N | -1 (always), "status": 500, "delay": 0.5,
  "body": {...}} arms a fault for a route (`GET /healthz` included; `body` replaces the answer, so
  `{"status": 200, "body": {"status": "DEGRADED"}}` is a degraded 200), or for one exact path ("route":
  "DELETE /records/t-42", which wins over its route's); `DELETE /_faults` clears them;
- `GET /_stats` returns deliveries and applied effects; `POST /_reset` forgets everything.

Run: python examples/task_service.py --port 8089
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

EFFECT_ROUTES = {
    ("POST", "/records"),
    ("DELETE", "/records/{id}"),
    ("POST", "/capacity/reserve"),
    ("POST", "/capacity/release"),
    ("POST", "/notices"),
    ("DELETE", "/notices/{id}"),
    ("POST", "/dashboard"),
    ("POST", "/alerts"),
    ("POST", "/approvals"),
    ("POST", "/deploy"),
}


@dataclass
class Fault:
    remaining: int  # -1 = always
    status: int = 500
    delay: float = 0.0
    body: Any = None


@dataclass
class State:
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    applied: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    records: dict[str, Any] = field(default_factory=dict)
    reservations: dict[str, Any] = field(default_factory=dict)
    notices: dict[str, Any] = field(default_factory=dict)
    created: int = 0
    healthy: bool = True

    def new_id(self, prefix: str) -> str:
        self.created += 1
        return f"{prefix}-{self.created}"


def _route_key(request: web.Request) -> str:
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else request.path
    return f"{request.method} {canonical}"


async def _body(request: web.Request) -> Any:
    if not request.can_read_body:
        return None
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return await request.text()


def _apply(state: State, route: str, request: web.Request, body: Any) -> dict[str, Any]:
    """The effect of a first delivery, and the IDs it answers with."""
    given = body if isinstance(body, dict) else {}
    if route == "POST /records":
        record_id = str(given["id"]) if given.get("id") is not None else state.new_id("rec")
        state.records[record_id] = body
        return {"id": record_id}
    if route == "DELETE /records/{id}":
        state.records.pop(request.match_info["id"], None)
    elif route == "POST /capacity/reserve":
        reservation = state.new_id("res")
        state.reservations[reservation] = body
        return {"reservationId": reservation}
    elif route == "POST /capacity/release" and given.get("reservationId") is not None:
        state.reservations.pop(str(given["reservationId"]), None)
    elif route == "POST /notices":
        notice = state.new_id("ntc")
        state.notices[notice] = body
        return {"noticeId": notice}
    elif route == "DELETE /notices/{id}":
        state.notices.pop(request.match_info["id"], None)
    return {}


def make_app() -> web.Application:
    state = State()
    app = web.Application()

    async def effect(request: web.Request) -> web.Response:
        route = _route_key(request)
        key = request.headers.get("Idempotency-Key", "")
        body = await _body(request)
        state.deliveries.append({"route": route, "path": request.path, "key": key, "at": time.time()})
        # A fault on this exact path (e.g. DELETE /records/t-42) wins over one on the whole route.
        fault = state.faults.get(f"{request.method} {request.path}") or state.faults.get(route)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if request.headers.get("X-Fail") == "always":
            return web.json_response({"error": "fault injected by X-Fail header"}, status=500)
        if fault is not None and fault.remaining != 0:
            if fault.remaining > 0:
                fault.remaining -= 1
            answer = fault.body if fault.body is not None else {"error": f"fault injected for {route}"}
            return web.json_response(answer, status=fault.status)
        if key and key in state.answers:
            status, answer = state.answers[key]
            return web.json_response({**answer, "duplicate": True}, status=status)
        state.applied.append({"route": route, "path": request.path, "key": key, "body": body, "at": time.time()})
        answer: dict[str, Any] = {"ok": True, "route": route, **_apply(state, route, request, body)}
        if key:
            state.answers[key] = (200, answer)
        return web.json_response(answer)

    async def healthz(request: web.Request) -> web.Response:
        state.deliveries.append({"route": "GET /healthz", "path": request.path, "key": "", "at": time.time()})
        # A fault on this exact path (GET /healthz/NAME) wins over one on every health check.
        fault = state.faults.get(f"GET {request.path}") or state.faults.get("GET /healthz")
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.remaining != 0:
            if fault.remaining > 0:
                fault.remaining -= 1
            answer = fault.body if fault.body is not None else {"healthy": False, "status": "DOWN"}
            return web.json_response(answer, status=fault.status)
        return web.json_response({"healthy": True, "status": "UP"})

    async def echo(request: web.Request) -> web.Response:
        received = dict(request.headers)
        state.deliveries.append(
            {"route": _route_key(request), "path": request.path, "key": "", "at": time.time(), "headers": received}
        )
        if "to" in request.query:
            return web.Response(status=302, headers={"Location": request.query["to"]})
        auth = request.headers.get("Authorization", "")
        return web.json_response(
            {"headers": received},
            headers={"X-Echo-Authorization": auth},
            reason="OK " + base64.b64encode(auth.encode()).decode(),
        )

    async def set_fault(request: web.Request) -> web.Response:
        spec = await request.json()
        state.faults[spec["route"]] = Fault(
            int(spec.get("fail", -1)), int(spec.get("status", 500)), float(spec.get("delay", 0)), spec.get("body")
        )
        return web.json_response({"ok": True})

    async def clear_faults(_: web.Request) -> web.Response:
        state.faults.clear()
        return web.json_response({"ok": True})

    async def stats(_: web.Request) -> web.Response:
        live = {"records": state.records, "reservations": state.reservations, "notices": state.notices}
        return web.json_response({"deliveries": state.deliveries, "applied": state.applied, **live})

    async def reset(_: web.Request) -> web.Response:
        state.deliveries.clear()
        state.applied.clear()
        state.answers.clear()
        state.faults.clear()
        state.records.clear()
        state.reservations.clear()
        state.notices.clear()
        return web.json_response({"ok": True})

    for method, path in sorted(EFFECT_ROUTES):
        app.router.add_route(method, path, effect)
    app.router.add_route("*", "/echo/{name}", echo)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/healthz/{name}", healthz)
    app.router.add_post("/_faults", set_fault)
    app.router.add_delete("/_faults", clear_faults)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", reset)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
