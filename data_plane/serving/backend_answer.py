"""What a backend's HTTP status says about the deployment that answered, and whether its `GET /models` answer
shows the deployment's model: pure functions of the status, the header's text and the wall clock."""

from __future__ import annotations

import math
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum

import orjson

DEFAULT_RETRY_AFTER_S = 1.0  # a 429 without a usable Retry-After
MAX_RETRY_AFTER_S = 60.0  # a longer one (or a date further ahead) is cut to this: a backend cannot park itself

# The request is at fault, whichever deployment gets it: 400 (malformed), 413 (too large), 422 (invalid),
# and the other 4xx below (HTTP puts them on the request). Counting them against the backend would let one
# client's odd request eject deployments.
_MISCONFIGURED = {
    401: "the backend refused the router's credentials: check the deployment's api_key_env",
    403: "the backend forbids the router's credentials this model or path: check api_key_env and served_model",
    404: "the backend does not know this model or path: check the deployment's url and served_model",
    405: "the backend does not take this request at this path: check the deployment's url",
    407: "a proxy on the way to the backend wants credentials: check the deployment's url",
}
# Failures of the backend at that moment, which OpenAI's own clients retry: the backend timed out reading the
# request (408), or a conflicting operation was in progress (409).
_TRANSIENT_4XX = frozenset({408, 409})


class AnswerMeaning(StrEnum):
    OK = "ok"  # 2xx: the answer goes to the client
    CLIENT_ERROR = "client error"  # the request is at fault: passed to the client, no verdict on the backend
    MISCONFIGURED = "misconfigured"  # the deployment's url, served_model or key is wrong: a failure, fall back
    SATURATED = "saturated"  # 429: fall back, and the deployment is no candidate until its Retry-After
    SERVER_FAILURE = "server failure"  # 5xx, 408, 409: the backend failed this request, fall back

    @property
    def falls_back(self) -> bool:
        """Nothing reached the client: the next candidate takes the request."""
        return self in (AnswerMeaning.MISCONFIGURED, AnswerMeaning.SATURATED, AnswerMeaning.SERVER_FAILURE)


@dataclass(frozen=True, slots=True)
class BackendAnswer:
    status: int
    meaning: AnswerMeaning
    retry_after_s: float = 0.0  # saturated only: how long the deployment is no candidate

    @property
    def hint(self) -> str:
        """What an operator should look at (misconfigured answers), or why the deployment is passed over."""
        if self.meaning is AnswerMeaning.MISCONFIGURED:
            return _MISCONFIGURED.get(self.status, "the backend redirects: point the deployment's url at the "
                                                   "final address")
        if self.meaning is AnswerMeaning.SATURATED:
            return f"the backend is saturated: no request for {self.retry_after_s:g}s"
        return str(self.meaning)


def meaning(status: int) -> AnswerMeaning:
    if 200 <= status < 300:
        return AnswerMeaning.OK
    if status == 429:
        return AnswerMeaning.SATURATED
    if status in _MISCONFIGURED or status < 200 or 300 <= status < 400:
        # Below 200 or 3xx is no answer an OpenAI-compatible server gives to a POST (redirects are followed).
        return AnswerMeaning.MISCONFIGURED
    if status in _TRANSIENT_4XX or status >= 500:
        return AnswerMeaning.SERVER_FAILURE
    return AnswerMeaning.CLIENT_ERROR


def retry_after_s(value: str | None, now_unix: float) -> float:
    """A Retry-After header (delay seconds, or an HTTP-date read against `now_unix`) as seconds from now, within
    [0, MAX_RETRY_AFTER_S]; DEFAULT_RETRY_AFTER_S when absent or unreadable."""
    text = (value or "").strip()
    if not text:
        return DEFAULT_RETRY_AFTER_S
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now_unix
        except (TypeError, ValueError, IndexError, OverflowError):
            return DEFAULT_RETRY_AFTER_S
    if math.isnan(seconds):
        return DEFAULT_RETRY_AFTER_S
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def classify(status: int, retry_after: str | None = None, *, now_unix: float = 0.0) -> BackendAnswer:
    """What the deployment's answer means; `retry_after` (the header's text) matters only for a 429."""
    answer_meaning = meaning(status)
    if answer_meaning is AnswerMeaning.SATURATED:
        return BackendAnswer(status, answer_meaning, retry_after_s(retry_after, now_unix))
    return BackendAnswer(status, answer_meaning)


def listed_models(payload: bytes) -> frozenset[str] | None:
    """The ids in an OpenAI model list, `{"data": [{"id": ...}, ...]}`; None when the body is not one."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list):
        return None
    return frozenset(entry["id"] for entry in data if isinstance(entry, dict) and isinstance(entry.get("id"), str))


def models_probe_failure(status: int, listed: frozenset[str] | None, served_model: str) -> str | None:
    """Why a deployment's `GET /models` answer shows it unhealthy, or None when it is healthy: a 2xx that lists
    the model the deployment serves (or, as Ollama lists a model asked for without a tag, `<model>:latest`)."""
    if not 200 <= status < 300:
        return f"GET /models answered {status} ({meaning(status)})"
    if listed is None:
        return "GET /models answered no OpenAI model list"
    if served_model not in listed and f"{served_model}:latest" not in listed:
        shown = ", ".join(sorted(listed)[:5]) + (", ..." if len(listed) > 5 else "")
        return f"GET /models does not list served_model {served_model!r} (it lists: {shown or 'nothing'})"
    return None
