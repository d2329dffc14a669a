"""The console's HTTP server (aiohttp): routes, the viewer's credentials per request, and the page guards.

Guards, for a console that acts with whatever credentials its viewer brings:
- Content-Security-Policy `default-src 'self'` with no inline script or style, X-Frame-Options DENY
  (no clickjacking of the Approve button), nosniff, referrers only to itself (a stricter policy makes
  browsers send `Origin: null` with a form), no caching of pages.
- A POST is accepted only from the console's own origin (the Origin header) and with a CSRF token bound to the
  viewer (an HMAC of the viewer's key with a secret of this process).
- In kubeconfig mode (the console is the local user) only requests naming the console's own address in Host
  are served: a web page elsewhere cannot reach it by DNS rebinding.
The Kubernetes client is synchronous: its calls run in threads, so one slow API call holds up no other page.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from aiohttp import web
from kubernetes.client.exceptions import ApiException

from steadfast.api.kinds import APPROVAL_REQUEST, HEALTH_MONITOR, SAGA_SCHEDULE, TASK_SAGA, TEMPLATES, Kind
from steadfast.console import kube, live, pages
from steadfast.console.identity import Credentials, Unauthenticated, Untrusted, Viewer
from steadfast.fleet.phases import PHASES
from steadfast.kubeconfig import api_message
from steadfast.repair.decisions import Action

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}
FRAGMENT = "X-Console-Fragment"  # the page script's request for the main section alone (a live update)
_WHO_SECONDS = 60.0
MAX_STREAMS = 500
MAX_STREAMS_PER_VIEWER = 20
_DETAIL = {
    TASK_SAGA.plural: TASK_SAGA,
    HEALTH_MONITOR.plural: HEALTH_MONITOR,
    APPROVAL_REQUEST.plural: APPROVAL_REQUEST,
    SAGA_SCHEDULE.plural: SAGA_SCHEDULE,
    **{k.plural: k for k in TEMPLATES},
}
_REPAIRABLE = (TASK_SAGA, APPROVAL_REQUEST)

_ACTIONS: dict[str, Action] = {a: a for a in ("Retry", "Skip", "Compensate", "Resolve")}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _static() -> Any:
    return resources.files("steadfast.console") / "static"


class Console:
    """The app and what it keeps between requests: the CSRF secret, the allowed Host values, who is who."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        allowed_hosts: frozenset[str] = frozenset(),
        namespace: str | None = None,
    ) -> None:
        self.credentials = credentials
        self.allowed_hosts = allowed_hosts
        self.namespace = namespace  # shown when a page names none; None: every namespace the viewer may list
        self.max_streams = MAX_STREAMS
        self.max_streams_per_viewer = MAX_STREAMS_PER_VIEWER
        self._streams: dict[str, int] = {}  # open event streams by viewer key
        self._secret = secrets.token_bytes(32)
        self._who: dict[str, tuple[float, kube.Identity]] = {}

    def csrf(self, viewer: Viewer) -> str:
        return hmac.new(self._secret, viewer.key.encode(), hashlib.sha256).hexdigest()

    async def who(self, viewer: Viewer) -> kube.Identity:
        cached = self._who.get(viewer.key)
        if cached and time.monotonic() - cached[0] < _WHO_SECONDS:
            return cached[1]
        identity = await asyncio.to_thread(kube.whoami, viewer.api)
        self._who[viewer.key] = (time.monotonic(), identity)
        return identity

    def namespace_of(self, request: web.Request) -> str | None:
        """The page's namespace: `?ns=` as given (empty: every namespace), else the console's default."""
        given = request.query.get("ns")
        return self.namespace if given is None else (given.strip() or None)

    # ---- guards ------------------------------------------------------------------------------------------

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response: web.StreamResponse
        try:
            if self.allowed_hosts and request.host not in self.allowed_hosts:
                response = self._plain(421, "this console answers only at its own address")
            else:
                response = await handler(request)
        except web.HTTPException as exc:
            response = self._plain(exc.status, (exc.text or exc.reason).strip())
        except Unauthenticated as exc:
            response = self._plain(401, str(exc))
            response.headers["WWW-Authenticate"] = 'Bearer realm="steadfast-console"'
        except Untrusted as exc:
            response = self._plain(403, str(exc))
        if not response.prepared:  # an event stream sent its headers already (the same ones)
            for name, value in HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    @staticmethod
    def _plain(status: int, text: str) -> web.Response:
        return web.Response(status=status, text=text + "\n", content_type="text/plain")

    def viewer(self, request: web.Request) -> Viewer:
        headers = {k.lower(): v for k, v in request.headers.items()}
        return self.credentials.viewer(headers, request.remote)

    async def checked_post(self, request: web.Request, viewer: Viewer) -> dict[str, str]:
        """The form of a POST from this console's own page, else 403: same origin, and the viewer's token."""
        origin = request.headers.get("Origin")
        if not origin or urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text="cross-origin request refused\n")
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not hmac.compare_digest(form.get("csrf", ""), self.csrf(viewer)):
            raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page\n")
        return form

    # ---- pages -------------------------------------------------------------------------------------------

    async def _page(
        self,
        request: web.Request,
        viewer: Viewer,
        title: str,
        body: str,
        *,
        live: str | None,
        status: int = 200,
        canonical: str | None = None,
    ) -> web.Response:
        who = await self.who(viewer)
        text = pages.layout(title, body, who=who, live=live, csrf=self.csrf(viewer), canonical=canonical)
        if request.headers.get(FRAGMENT):
            start = text.index(">", text.index("<main")) + 1
            text = text[start : text.index("</main>")]
        return web.Response(status=status, text=text, content_type="text/html")

    async def _failed(self, request: web.Request, viewer: Viewer, title: str, exc: ApiException) -> web.Response:
        status = exc.status if exc.status in (403, 404) else 502
        return await self._page(request, viewer, title, pages.error(api_message(exc)), live=None, status=status)

    async def overview(self, request: web.Request) -> web.Response:
        viewer = self.viewer(request)
        namespace = self.namespace_of(request)
        data = await asyncio.to_thread(kube.overview, viewer.api, namespace)
        live_url = "/live?" + _query(kind=TASK_SAGA.plural, ns=namespace)
        return await self._page(request, viewer, "Overview", pages.overview(data, namespace), live=live_url)

    async def approvals(self, request: web.Request) -> web.Response:
        viewer = self.viewer(request)
        namespace = self.namespace_of(request)
        who = await self.who(viewer)
        objects, warnings = await asyncio.to_thread(kube.inbox, viewer.api, who, namespace)
        body = pages.inbox(objects, warnings, self.csrf(viewer), namespace)
        live_url = "/live?" + _query(kind=APPROVAL_REQUEST.plural, ns=namespace)
        return await self._page(request, viewer, "Approvals waiting for you", body, live=live_url)

    async def listing(self, request: web.Request) -> web.Response:
        viewer = self.viewer(request)
        kind = _DETAIL.get(request.query.get("kind", TASK_SAGA.plural))
        if kind is None:
            raise web.HTTPNotFound(text="unknown kind\n")
        q = request.query
        namespace, phase, selector = self.namespace_of(request), q.get("phase") or None, q.get("selector") or None
        if kind not in PHASES:
            phase = None  # a schedule is Ready or says why not; a template is a definition
        if not kind.namespaced:
            namespace = None
        title = f"{kind.kind}s"
        try:
            page = await asyncio.to_thread(
                kube.page, viewer.api, kind, namespace, phase=phase, selector=selector, token=q.get("cont") or None
            )
        except ApiException as exc:
            return await self._failed(request, viewer, title, exc)
        if kind is SAGA_SCHEDULE:
            body = pages.schedules(page, namespace=namespace, selector=selector)
        elif kind in TEMPLATES:
            body = pages.templates(kind.plural, page, namespace=namespace, selector=selector)
        else:
            body = pages.listing(kind.plural, page, namespace=namespace, phase=phase, selector=selector)
        return await self._page(request, viewer, title, body, live="/live?" + _query(kind=kind.plural, ns=namespace))

    async def detail(self, request: web.Request, notice: str = "", kind: Kind | None = None) -> web.Response:
        """One resource's page; after a decision, with its outcome (`notice`) on top."""
        viewer = self.viewer(request)
        kind = kind or _kind(request)
        namespace, name = request.match_info.get("ns"), request.match_info["name"]
        if (namespace is None) == kind.namespaced:  # /cluster/ for a namespaced kind, or /ns/ for a cluster one
            raise web.HTTPNotFound(text=f"{kind.kind} is {'namespaced' if kind.namespaced else 'cluster-scoped'}\n")
        title = f"{kind.kind} {name}"
        try:
            obj = await asyncio.to_thread(kube.get, viewer.api, kind, namespace, name)
        except ApiException as exc:
            return await self._failed(request, viewer, title, exc)
        events = await asyncio.to_thread(kube.events, viewer.api, kind, namespace, name)
        if kind is TASK_SAGA:
            body = pages.saga(obj, events, self.csrf(viewer), notice)
        elif kind is HEALTH_MONITOR:
            body = pages.monitor(obj, events)
        elif kind is SAGA_SCHEDULE:
            runs, kept = await asyncio.to_thread(kube.runs, viewer.api, obj)
            body = pages.schedule(obj, runs, events, kept)
        elif kind in TEMPLATES:
            body = pages.template(obj, events)
        else:
            body = pages.approval(obj, self.csrf(viewer), events, notice)
        live_url = "/live?" + _query(kind=kind.plural, ns=namespace, name=name)
        canonical = f"{f'/ns/{quote(namespace)}' if namespace else '/cluster'}/{kind.plural}/{quote(name)}"
        return await self._page(request, viewer, title, body, live=live_url, canonical=canonical)

    async def decide(self, request: web.Request) -> web.Response:
        viewer = self.viewer(request)
        form = await self.checked_post(request, viewer)
        verdict = form.get("verdict")
        if verdict not in ("approve", "reject"):
            raise web.HTTPBadRequest(text="verdict must be approve or reject\n")
        namespace, name = request.match_info["ns"], request.match_info["name"]
        reason = form.get("reason", "").strip()
        if verdict == "reject" and not reason:  # as `steadfast reject --reason`: the requester learns why
            return await self.detail(request, pages.notice(False, "give a reason to reject"), APPROVAL_REQUEST)
        result = await asyncio.to_thread(kube.decide, viewer.api, namespace, name, verdict == "approve", reason)
        return await self.detail(request, pages.notice(result.done, result.message), APPROVAL_REQUEST)

    async def repair(self, request: web.Request) -> web.Response:
        """A repair decision: on a saga (Retry, Skip, Compensate, Resolve), or Retry of an ApprovalRequest whose
        approved action failed; which fits the phase is the webhook's judgement."""
        viewer = self.viewer(request)
        kind = _kind(request)
        if kind not in _REPAIRABLE:
            raise web.HTTPNotFound(text="only TaskSagas and ApprovalRequests take repair decisions\n")
        form = await self.checked_post(request, viewer)
        action = _ACTIONS.get(form.get("action", ""))
        if action is None or (kind is APPROVAL_REQUEST and action != "Retry"):
            raise web.HTTPBadRequest(text="action must be Retry, Skip, Compensate or Resolve (Retry for a request)\n")
        namespace, name = request.match_info["ns"], request.match_info["name"]
        reason, step = form.get("reason", "").strip(), form.get("step")
        result = await asyncio.to_thread(kube.repair, viewer.api, kind, namespace, name, action, reason, step)
        return await self.detail(request, pages.notice(result.done, result.message), kind)

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events of one watch as the viewer, until the browser closes the stream.

        Each stream holds a thread and a watch on the API server: a viewer may hold MAX_STREAMS_PER_VIEWER at
        once and the console MAX_STREAMS (429 beyond), so one person's tabs cannot use up the console."""
        viewer = self.viewer(request)
        kind = _DETAIL.get(request.query.get("kind", ""))
        if kind is None:
            raise web.HTTPNotFound(text="unknown kind\n")
        held = self._streams.get(viewer.key, 0)
        if held >= self.max_streams_per_viewer or sum(self._streams.values()) >= self.max_streams:
            raise web.HTTPTooManyRequests(text="too many live pages open: close some tabs\n")
        self._streams[viewer.key] = held + 1
        watch = live.Watch(viewer.api, kind, request.query.get("ns") or None, request.query.get("name") or None)
        try:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **HEADERS})
            await response.prepare(request)
            watch.start()
            await response.write(live.sse("open", {}))
            async for event in watch.events():
                await response.write(live.KEEPALIVE if event is None else live.sse("change", event))
        except ConnectionResetError:
            pass  # the browser went away
        finally:
            watch.close()
            self._streams[viewer.key] -= 1
            if not self._streams[viewer.key]:
                del self._streams[viewer.key]
        return response

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        types = {"console.js": "text/javascript", "console.css": "text/css"}
        if name not in types:
            raise web.HTTPNotFound()
        body = (_static() / name).read_bytes()
        return web.Response(body=body, content_type=types[name], headers={"Cache-Control": "max-age=300"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard], client_max_size=64 * 1024)
        app.add_routes(
            [
                web.get("/", self.overview),
                web.get("/approvals", self.approvals),
                web.get("/list", self.listing),
                web.get("/live", self.live),
                web.get("/healthz", self.healthz),
                web.get("/static/{file}", self.static),
                web.get("/ns/{ns}/{plural}/{name}", self.detail),
                web.get("/cluster/{plural}/{name}", self.detail),
                web.post("/ns/{ns}/approvalrequests/{name}/decide", self.decide),
                web.post("/ns/{ns}/{plural}/{name}/repair", self.repair),
            ]
        )
        return app


def _kind(request: web.Request) -> Kind:
    kind = _DETAIL.get(request.match_info["plural"])
    if kind is None:
        raise web.HTTPNotFound(text="unknown kind\n")
    return kind


def _query(**params: str | None) -> str:
    return urlencode({k: v for k, v in params.items() if v})
