"""The Action every kind uses to reach the outside world: `http`, or `kubernetes` (an object, as the user).

Only the model lives here; executing it (Idempotency-Key, Secret opt-in, egress policy) is the
operator's `actions` module. Exactly one kind of action is set; the CRD enforces that with CEL
generated from `Action.ONE_OF`, so adding `invoke` extends the rule by itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import (
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    JsonValue,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from steadfast.api.common import DNS_SUBDOMAIN, MAX_BODY_DEPTH, ApiModel, Timestamp, json_depth
from steadfast.api.duration import DurationCheck
from steadfast.api.object_action import OBJECT, ObjectAction
from steadfast.api.schema import LIST_SET, VALIDATIONS, Cel, list_map, rules
from steadfast.expressions.language import (
    MAX_LENGTH,
    ExpressionError,
    problems_in,
    responding,
    sources_in,
    strings_of,
)
from steadfast.expressions.reads import reads

# Go's RE2 `\s` is ASCII only, so the Unicode spaces Python's `str.isspace` also refuses are listed too.
_URL_SPACE = r"\s\v\x1c-\x1f\x85\p{Z}"
URL_PATTERN = rf"^https?://[^{_URL_SPACE}/?#]+([/?#][^{_URL_SPACE}]*)?$"
URL_MAX_LENGTH = 2048
HEADER_NAME_PATTERN = r"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$"
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
ACTION_KINDS = ("http", "kubernetes")  # add a kind here and as a field of Action
# What conditions and outputs may read of a response to a request that carried a Secret: a body or a header
# could echo the Secret back, in any encoding (docs/security.md, "Secrets stay where their writer sends them").
SEALED_FIELDS = ("status", "durationMs")
URL_MESSAGE = "http.url must be an absolute http:// or https:// URL with a host, e.g. http://tasks.svc/records"


class HttpMethod(StrEnum):
    GET = "GET"
    HEAD = "HEAD"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"
    OPTIONS = "OPTIONS"


_GO_URL = re.compile(r"(https?)://([^/?]*)(.*)", re.DOTALL)  # lower-case scheme, as URL_PATTERN wants
_USERINFO = re.compile(r"[-A-Za-z0-9._:~!$&'()*+,;=%@]*")
_HOST_CHARS = re.compile(r"""[-A-Za-z0-9._~!$&'()*+,;=:\[\]<>"%\x80-\U0010ffff]*""")
_PORT = re.compile(r"(:[0-9]*)?")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_BAD_HOST_ESCAPE = re.compile(r"%(?!25|[89A-Fa-f][0-9A-Fa-f])")


def _go_request_uri(value: str) -> bool:
    """What the CRD's CEL `isURL` (Go's `url.ParseRequestURI`) accepts, for absolute http(s) URLs.

    Go keeps `#` in the path (no fragment), refuses ASCII control characters, bad `%` escapes in the
    path and host, characters a host may not hold, and a port that is not all digits.
    """
    match = _GO_URL.fullmatch(value)
    if match is None or any(c < " " or c == "\x7f" for c in value):
        return False
    authority, rest = match[2], match[3]
    if _BAD_ESCAPE.search(rest.split("?", 1)[0]):
        return False
    userinfo, at, hostport = authority.rpartition("@")
    if at and (not _USERINFO.fullmatch(userinfo) or _BAD_ESCAPE.search(userinfo)):
        return False
    if hostport.startswith("["):
        end = hostport.find("]")
        return end >= 0 and bool(_PORT.fullmatch(hostport[end + 1 :]))
    host, colon, port = hostport.rpartition(":")
    if not colon:
        host, port = hostport, ""
    return (
        bool(host)
        and port.isascii()
        and (port == "" or port.isdigit())
        and bool(_HOST_CHARS.fullmatch(host))
        and not _BAD_HOST_ESCAPE.search(host)
    )


@dataclass(frozen=True)
class UrlCheck:
    """An absolute http(s) URL with a host; the same test in pydantic and (as CEL) in the CRD."""

    def validate(self, value: str) -> str:
        try:
            parts = urlsplit(value)
            host = parts.hostname
        except ValueError:
            host = None
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not host
            or any(c.isspace() for c in value)
            or len(value) > URL_MAX_LENGTH
            or not _go_request_uri(value)
        ):
            raise PydanticCustomError("url", URL_MESSAGE + ", not {value}", {"value": repr(value)})
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = dict(handler(schema))
        out.update(pattern=URL_PATTERN, maxLength=URL_MAX_LENGTH)
        out[VALIDATIONS] = [
            *out.get(VALIDATIONS, []),
            {
                "rule": "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHost() != ''",
                "message": URL_MESSAGE,
            },
        ]
        return out


class SecretKeyRef(ApiModel):
    """A key of a Secret in the resource's namespace; the Secret must opt in to being referenced, and says
    where it may be sent (see steadfast.secret_refs)."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret.")
    key: str = Field(max_length=253, pattern=CONFIG_KEY_PATTERN, description="Key within the Secret.")


class HeaderValueSource(ApiModel):
    """Where a header value comes from when it is not inline."""

    secret_key_ref: SecretKeyRef = Field(description="Read the value from this Secret key.")


class Header(ApiModel):
    """One request header: an inline `value` or a `valueFrom` Secret reference, not both."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            Cel("has(self.value) != has(self.valueFrom)", "a header sets exactly one of value or valueFrom")
        )
    )

    name: str = Field(min_length=1, max_length=256, pattern=HEADER_NAME_PATTERN, description="Header name.")
    value: str | None = Field(None, max_length=8192, description="Inline header value.")
    value_from: HeaderValueSource | None = Field(
        None,
        description=(
            "Take the value from a Secret labelled steadfast.dev/referable=true, sent only where its "
            "steadfast.dev/send-to annotation allows (without it: Services of its namespace). Conditions and "
            "outputs of the action then read only response.status and response.durationMs."
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> Header:
        if (self.value is None) == (self.value_from is None):
            raise PydanticCustomError(
                "header_source", "header {name} must set exactly one of value or valueFrom", {"name": repr(self.name)}
            )
        return self


HttpBody = Annotated[
    JsonValue,
    WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True}),
]


BODY_DEPTH_MESSAGE = f"http.body is nested more than {MAX_BODY_DEPTH} levels deep; flatten it"


class HttpAction(ApiModel):
    """An HTTP request. Success means a response whose status is in `expectedStatus` (any 2xx if unset), or
    one for which `successWhen` holds.

    The url, header values and body strings may hold `$(expression)` placeholders (CEL) over what the place
    of the action offers (a saga step: `task`, `saga`, `outputs`; see each kind). In the url a value is
    percent-encoded; a body string that is one placeholder becomes the value itself (a number stays one).
    """

    model_config = ConfigDict(
        json_schema_extra=rules(
            Cel(
                "!has(self.successWhen) || !has(self.expectedStatus) || size(self.expectedStatus) == 0",
                "http sets expectedStatus or successWhen, not both",
            )
        )
    )

    method: HttpMethod = Field(HttpMethod.GET, description="HTTP method.")
    url: Annotated[str, UrlCheck()] = Field(description="Absolute http:// or https:// URL.")
    headers: Annotated[list[Header], list_map("name")] = Field(
        default_factory=list, max_length=32, description="Request headers; names are unique."
    )
    body: HttpBody = Field(None, description="JSON request body, sent as application/json.")
    expected_status: Annotated[list[Annotated[int, Field(ge=100, le=599)]], LIST_SET] = Field(
        default_factory=list,
        max_length=64,
        description="Status codes that mean success; empty means any 2xx (200-299).",
    )
    success_when: str | None = Field(
        None,
        max_length=MAX_LENGTH,
        description=(
            "CEL condition over response.status, response.headers (lower-case names), response.body (parsed "
            "JSON, else text) and response.durationMs that means success, instead of expectedStatus; "
            'e.g. response.status == 200 && response.body.state == "done". Only response.status and '
            "response.durationMs when a header comes from a Secret."
        ),
    )
    timeout: Annotated[str, DurationCheck("http.timeout", maximum="1h")] = Field(
        "10s", description="Time limit for one request, e.g. 10s."
    )

    @property
    def secret_headers(self) -> list[str]:
        """The names of the headers whose value comes from a Secret."""
        return [h.name for h in self.headers if h.value_from is not None]

    def sealed_problems(self, scope: frozenset[str], expressions: list[tuple[str, str | None]]) -> list[str]:
        """Why `expressions` (field, source) may not read this request's response: only the status and the
        duration, when the request carries a Secret. Nothing when it carries none."""
        carried = ", ".join(
            f"header {h.name} from Secret {h.value_from.secret_key_ref.name}"
            for h in self.headers
            if h.value_from is not None
        )
        if not carried:
            return []
        allowed = " and ".join(f"response.{f}" for f in SEALED_FIELDS)
        problems = []
        for field, source in expressions:
            if source is None:
                continue
            try:
                used = reads(source, responding(scope), "response")
            except ExpressionError:
                continue  # reported by the compile check
            bad = list(dict.fromkeys(r.describe("response") for r in used if r.field not in SEALED_FIELDS))
            if bad:
                problems.append(
                    f"{field}: reads {', '.join(bad)}, but the request carries a Secret ({carried}): a response "
                    f"to it may be read only as {allowed}, since any other part could echo the Secret back"
                )
        return problems

    def templates(self, where: str) -> list[tuple[str, str]]:
        """The strings that may hold placeholders, by field: url, header values, body strings and keys."""
        texts = [(f"{where}.url", self.url)]
        texts += [(f"{where}.headers[{h.name}].value", h.value) for h in self.headers if h.value is not None]
        texts += [(f"{where}.body{path}", text) for path, text in strings_of(self.body)]
        return texts

    def expression_problems(self, scope: frozenset[str], where: str) -> list[str]:
        """What does not compile in this request's placeholders (in `scope`) and successWhen, by field, and
        what successWhen may not read of a response to a request that carries a Secret."""
        condition = [(f"{where}.successWhen", self.success_when)]
        return problems_in(self.templates(where), condition, responding(scope)) + self.sealed_problems(scope, condition)

    def expression_sources(self) -> list[str]:
        """The source of every expression the request holds (placeholders, then successWhen)."""
        return sources_in(self.templates(""), [self.success_when])

    def accepts(self, status: int) -> bool:
        """Whether a response with `status` counts as success."""
        return status in self.expected_status if self.expected_status else 200 <= status <= 299

    @model_validator(mode="before")
    @classmethod
    def _body_depth(cls, data: Any) -> Any:
        # Before field validation: pydantic's own limit (255 levels) would give an unreadable error first.
        if isinstance(data, dict) and json_depth(data.get("body")) > MAX_BODY_DEPTH:
            raise PydanticCustomError("body_depth", BODY_DEPTH_MESSAGE)
        return data

    @model_validator(mode="after")
    def _codes(self) -> HttpAction:
        if len(set(self.expected_status)) != len(self.expected_status):
            raise PydanticCustomError("status_code", "http.expectedStatus lists a code twice")
        if self.expected_status and self.success_when is not None:
            raise PydanticCustomError("status_code", "http sets expectedStatus or successWhen, not both")
        return self


class Action(ApiModel):
    """Something the operator does for a resource. Set exactly one of the action kinds: http or kubernetes."""

    ONE_OF: ClassVar[tuple[str, ...]] = ACTION_KINDS
    model_config = ConfigDict(
        json_schema_extra=rules(
            Cel(
                " + ".join(f"(has(self.{k}) ? 1 : 0)" for k in ACTION_KINDS) + " == 1",
                "an action sets exactly one of: " + ", ".join(ACTION_KINDS),
            )
        )
    )

    http: HttpAction | None = Field(None, description="Send an HTTP request.")
    kubernetes: ObjectAction | None = Field(
        None, description="Apply, patch, delete or wait for a Kubernetes object, as the resource's creator."
    )

    @property
    def answer(self) -> str:
        """The variable conditions and outputs read the result from: `response` (http) or `object`."""
        return OBJECT if self.kubernetes is not None else "response"

    def expression_problems(self, scope: frozenset[str], where: str) -> list[str]:
        """Expressions of this action that do not compile where it is used (`scope`), named by field."""
        if self.kubernetes is not None:
            return self.kubernetes.expression_problems(scope, f"{where}.kubernetes")
        return self.http.expression_problems(scope, f"{where}.http") if self.http is not None else []

    def sealed_problems(self, scope: frozenset[str], expressions: list[tuple[str, str | None]]) -> list[str]:
        """Why `expressions` (field, source), conditions or outputs of this action, may not read its answer
        (an http request that carries a Secret; see HttpAction.sealed_problems)."""
        return self.http.sealed_problems(scope, expressions) if self.http is not None else []

    def expression_sources(self) -> list[str]:
        if self.kubernetes is not None:
            return self.kubernetes.expression_sources()
        return self.http.expression_sources() if self.http is not None else []

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        count = sum(getattr(self, k) is not None for k in self.ONE_OF)
        if count != 1:
            raise PydanticCustomError(
                "action_kind", "an action sets exactly one of: {kinds}", {"kinds": ", ".join(self.ONE_OF)}
            )
        return self


def refuse_expressions(problems: list[str]) -> None:
    """Raise the validation error admission refuses a resource with (type `expression`), if any."""
    if problems:
        raise PydanticCustomError("expression", "{problems}", {"problems": "; ".join(problems)})


class ActionResult(ApiModel):
    """The outcome of running an Action, as shown in status (never with Secret values)."""

    succeeded: bool = Field(description="Whether the action succeeded.")
    status_code: int | None = Field(None, description="HTTP status of the last response, if any.")
    attempts: int | None = Field(None, ge=0, description="How many times it was tried.")
    message: str | None = Field(None, description="What happened, e.g. the error.")
    finished_at: Timestamp | None = Field(None, description="When the last attempt finished.")
