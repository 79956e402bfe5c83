"""What a backend's status means for its deployment, as a table over the statuses a backend sends, with a
429's Retry-After in seconds and as an HTTP-date; and what a `GET /models` answer says about its health."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_plane.serving.backend_answer import (
    DEFAULT_RETRY_AFTER_S,
    MAX_RETRY_AFTER_S,
    AnswerMeaning,
    BackendAnswer,
    classify,
    listed_models,
    models_probe_failure,
    retry_after_s,
)

OK, CLIENT, MISCONFIGURED, SATURATED, FAILURE = (AnswerMeaning.OK, AnswerMeaning.CLIENT_ERROR,
                                                AnswerMeaning.MISCONFIGURED, AnswerMeaning.SATURATED,
                                                AnswerMeaning.SERVER_FAILURE)
NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (200, None, BackendAnswer(200, OK)),
        (201, None, BackendAnswer(201, OK)),
        (204, "5", BackendAnswer(204, OK)),  # a Retry-After means nothing on an answer
        (400, None, BackendAnswer(400, CLIENT)),
        (413, None, BackendAnswer(413, CLIENT)),
        (422, None, BackendAnswer(422, CLIENT)),
        (402, None, BackendAnswer(402, CLIENT)),  # other 4xx: HTTP puts them on the request
        (410, None, BackendAnswer(410, CLIENT)),
        (451, None, BackendAnswer(451, CLIENT)),
        (401, None, BackendAnswer(401, MISCONFIGURED)),
        (403, None, BackendAnswer(403, MISCONFIGURED)),
        (404, None, BackendAnswer(404, MISCONFIGURED)),
        (405, None, BackendAnswer(405, MISCONFIGURED)),
        (407, None, BackendAnswer(407, MISCONFIGURED)),
        (301, None, BackendAnswer(301, MISCONFIGURED)),  # a redirect aiohttp could not follow
        (304, None, BackendAnswer(304, MISCONFIGURED)),
        (102, None, BackendAnswer(102, MISCONFIGURED)),
        (408, None, BackendAnswer(408, FAILURE)),
        (409, None, BackendAnswer(409, FAILURE)),
        (429, None, BackendAnswer(429, SATURATED, DEFAULT_RETRY_AFTER_S)),
        (429, "", BackendAnswer(429, SATURATED, DEFAULT_RETRY_AFTER_S)),
        (429, "7", BackendAnswer(429, SATURATED, 7.0)),
        (429, " 2 ", BackendAnswer(429, SATURATED, 2.0)),
        (429, "0.5", BackendAnswer(429, SATURATED, 0.5)),
        (429, "0", BackendAnswer(429, SATURATED, 0.0)),
        (429, "3600", BackendAnswer(429, SATURATED, MAX_RETRY_AFTER_S)),
        (429, "-3", BackendAnswer(429, SATURATED, 0.0)),
        (429, "soon", BackendAnswer(429, SATURATED, DEFAULT_RETRY_AFTER_S)),
        (429, "nan", BackendAnswer(429, SATURATED, DEFAULT_RETRY_AFTER_S)),
        (429, "inf", BackendAnswer(429, SATURATED, MAX_RETRY_AFTER_S)),
        (429, formatdate(NOW + 12, usegmt=True), BackendAnswer(429, SATURATED, 12.0)),
        (429, formatdate(NOW + 86_400, usegmt=True), BackendAnswer(429, SATURATED, MAX_RETRY_AFTER_S)),
        (429, formatdate(NOW - 30, usegmt=True), BackendAnswer(429, SATURATED, 0.0)),  # already past
        (429, "Wed, 32 Foo 2015 07:28:00 GMT", BackendAnswer(429, SATURATED, DEFAULT_RETRY_AFTER_S)),
        (500, None, BackendAnswer(500, FAILURE)),
        (502, None, BackendAnswer(502, FAILURE)),
        (503, "5", BackendAnswer(503, FAILURE)),  # unavailable is a failure; only a 429 cools a deployment down
        (504, None, BackendAnswer(504, FAILURE)),
        (599, None, BackendAnswer(599, FAILURE)),
        (600, None, BackendAnswer(600, FAILURE)),
    ],
)
def test_each_status_means_what_the_table_says(status: int, retry_after: str | None,
                                               expected: BackendAnswer) -> None:
    assert classify(status, retry_after, now_unix=NOW) == expected


@pytest.mark.parametrize(
    ("meaning", "falls_back"),
    [(OK, False), (CLIENT, False), (MISCONFIGURED, True), (SATURATED, True), (FAILURE, True)],
)
def test_only_what_the_client_should_see_is_passed_through(meaning: AnswerMeaning, falls_back: bool) -> None:
    assert meaning.falls_back is falls_back


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        (BackendAnswer(401, MISCONFIGURED), "the backend refused the router's credentials: check the deployment's "
                                            "api_key_env"),
        (BackendAnswer(404, MISCONFIGURED), "the backend does not know this model or path: check the deployment's "
                                            "url and served_model"),
        (BackendAnswer(302, MISCONFIGURED), "the backend redirects: point the deployment's url at the final "
                                            "address"),
        (BackendAnswer(429, SATURATED, 2.5), "the backend is saturated: no request for 2.5s"),
        (BackendAnswer(502, FAILURE), "server failure"),
    ],
)
def test_the_hint_says_what_to_check(answer: BackendAnswer, hint: str) -> None:
    assert answer.hint == hint


@given(st.integers(min_value=0, max_value=999), st.one_of(st.none(), st.text(max_size=40)))
def test_every_status_and_header_gives_one_meaning_and_a_bounded_wait(status: int, header: str | None) -> None:
    answer = classify(status, header, now_unix=NOW)
    assert answer.meaning in AnswerMeaning
    assert 0.0 <= answer.retry_after_s <= MAX_RETRY_AFTER_S
    assert (answer.retry_after_s > 0) <= (answer.meaning is SATURATED)
    assert 0.0 <= retry_after_s(header, NOW) <= MAX_RETRY_AFTER_S


@pytest.mark.parametrize(
    ("payload", "listed"),
    [
        (b'{"object": "list", "data": [{"id": "m", "object": "model"}, {"id": "n"}]}', frozenset({"m", "n"})),
        (b'{"data": []}', frozenset()),
        (b'{"data": [{"id": 3}, "x", {"name": "m"}, {"id": "m"}]}', frozenset({"m"})),
        (b'{"models": [{"name": "m"}]}', None),  # Ollama's own /api/tags shape, not OpenAI's
        (b'[{"id": "m"}]', None),
        (b"<html>not found</html>", None),
        (b"", None),
    ],
)
def test_listed_models_reads_the_openai_model_list(payload: bytes, listed: frozenset[str] | None) -> None:
    assert listed_models(payload) == listed


@pytest.mark.parametrize(
    ("status", "listed", "served_model", "failure"),
    [
        (200, frozenset({"m"}), "m", None),
        (200, frozenset({"m", "other"}), "other", None),
        (200, frozenset({"llama3.2:latest"}), "llama3.2", None),  # Ollama answers for the untagged name
        (200, frozenset({"llama3.2:1b"}), "llama3.2", "GET /models does not list served_model 'llama3.2' (it "
                                                      "lists: llama3.2:1b)"),
        (200, frozenset({"m"}), "wrong", "GET /models does not list served_model 'wrong' (it lists: m)"),
        (200, frozenset(), "m", "GET /models does not list served_model 'm' (it lists: nothing)"),
        (200, frozenset(f"m{i}" for i in range(7)), "x",
         "GET /models does not list served_model 'x' (it lists: m0, m1, m2, m3, m4, ...)"),
        (200, None, "m", "GET /models answered no OpenAI model list"),
        (401, None, "m", "GET /models answered 401 (misconfigured)"),
        (404, frozenset({"m"}), "m", "GET /models answered 404 (misconfigured)"),
        (429, None, "m", "GET /models answered 429 (saturated)"),
        (400, None, "m", "GET /models answered 400 (client error)"),  # was healthy when anything below 500 was
        (503, None, "m", "GET /models answered 503 (server failure)"),
    ],
)
def test_a_models_probe_needs_a_2xx_listing_the_served_model(status: int, listed: frozenset[str] | None,
                                                             served_model: str, failure: str | None) -> None:
    assert models_probe_failure(status, listed, served_model) == failure
