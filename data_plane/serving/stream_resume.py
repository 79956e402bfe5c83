"""A client's stream from the moment its backend cut it: continued on the next candidate (at most
`max_stream_resumes` times), or ended honestly with an error event and no `[DONE]` when it cannot be.

The forwarder's loop over candidates does the rest: a cut attempt raises StreamCut, the next candidate gets the
continuation body (`continuation`), and its events are stitched into the same client stream (`stream_stitch`).
The resume starts as soon as the cut is seen: the next candidate is taken at once, nothing waits.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from aiohttp import web

from data_plane.config import StreamStallConfig
from data_plane.live_state import LiveDeployment
from data_plane.metrics import RouterMetrics
from data_plane.serving.continuation import (
    SentSoFar,
    continuation_body,
    remaining_tokens,
    sent_so_far,
    why_not_resumable,
)
from data_plane.serving.outcome import Settled, UsageSink
from data_plane.serving.relay import Resumed, StreamRelay
from data_plane.serving.request_shapes import ParsedRequest
from data_plane.serving.stream_cut import Cut
from data_plane.serving.stream_stitch import StreamStitch, closing_events, error_event
from data_plane.serving.usage import Usage, estimate_tokens
from data_plane.table.snapshot import DeploymentSpec
from meridian_common.catalog import ChatContinuation
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResumeSettings:
    max_stream_resumes: int = 2
    stall: StreamStallConfig = StreamStallConfig()
    chat_continuation: ChatContinuation = ChatContinuation.VLLM


@dataclass(frozen=True, slots=True)
class Resumer:
    """What every stream's resumption uses; the forwarder holds one."""

    settings: ResumeSettings
    metrics: RouterMetrics
    region: str

    def cut(self, resumption: Resumption | None, parsed: ParsedRequest, relayed: StreamRelay, live: LiveDeployment,
            cut: Cut, now: float) -> StreamCut:
        """The attempt on `live` was cut at `now`: its client's stream (`resumption` when a continuation was
        cut) to continue or end."""
        if resumption is None:
            return StreamCut(Resumption(self, parsed, relayed, live, cut, now))
        resumption.cut_at_deployment(live, cut, now)
        return StreamCut(resumption)


class StreamCut(Exception):
    """An attempt's stream was cut after bytes reached the client; `resumption` holds the client's stream."""

    def __init__(self, resumption: Resumption) -> None:
        super().__init__(f"stream cut by {resumption.cut_by}: {resumption.cut.detail}")
        self.resumption = resumption


class Resumption:
    """One client stream from its first cut on, across the attempts that continue it."""

    __slots__ = ("_cut_cost_usd", "_parsed", "_prefix_tokens", "_prompt_tokens_before", "_resumer", "cut",
                 "cut_architecture", "cut_at", "cut_by", "cut_model", "response", "resumes", "sent", "written")

    def __init__(self, resumer: Resumer, parsed: ParsedRequest, relayed: StreamRelay, live: LiveDeployment, cut: Cut,
                 now: float) -> None:
        self._resumer = resumer
        self._parsed = parsed
        self.response = relayed.response
        self.written = relayed.written
        self.resumes = 0
        self._prompt_tokens_before = 0
        self._prefix_tokens = 0  # the continued text's share of the current attempt's prompt
        self._cut_cost_usd = 0.0  # what the cut attempts' share of the stream cost, each at its deployment's prices
        self.sent = SentSoFar()
        self.cut_at_deployment(live, cut, now)

    def cut_at_deployment(self, live: LiveDeployment, cut: Cut, now: float) -> None:
        """The attempt on `live` (the first, or a continuation) was cut at `now`."""
        spec = live.spec
        self.cut_by: str = spec.name
        self.cut_model: str = live.model
        self.cut_architecture: str = spec.architecture
        self.cut: Cut = cut
        self.cut_at: float = now
        sent = sent_so_far(self.written)
        attempt = Usage(self._parsed.estimated_prompt_tokens + self._prefix_tokens, sent.tokens - self.sent.tokens,
                        estimated=True)
        self._cut_cost_usd += attempt.cost(spec.cost_per_1m_input, spec.cost_per_1m_output)
        self._prompt_tokens_before += attempt.prompt_tokens
        self.sent = sent

    @property
    def cut_usage(self) -> Usage:
        """What the cut attempts used: the prompts they were sent (estimated) and the tokens they delivered."""
        return Usage(self._prompt_tokens_before, self.sent.tokens, estimated=True)

    def settled(self, finished_by: Settled | None = None) -> Settled:
        """What the client's stream used and cost: the cut attempts' share (the prompts they were sent, the tokens
        they delivered, at their deployments' prices), plus the answer of the continuation that finished it, if
        one did. It is what the stream's usage chunk says."""
        cut = self.cut_usage
        if finished_by is None:
            return Settled(self.cut_model, cut, self._cut_cost_usd)
        usage = Usage(cut.prompt_tokens + finished_by.usage.prompt_tokens,
                      cut.completion_tokens + finished_by.usage.completion_tokens, estimated=True)
        return Settled(finished_by.model, usage, self._cut_cost_usd + finished_by.cost_usd)

    def charging(self, on_usage: UsageSink | None) -> UsageSink | None:
        """The sink of the continuation's answer: the client is charged the whole stream, cut attempts included."""
        if on_usage is None:
            return None
        return lambda finished_by: on_usage(self.settled(finished_by))

    @property
    def finished(self) -> bool:
        """The client already has the whole answer: its finish reason, or every token the request allows."""
        remaining = remaining_tokens(self._parsed.body.fields, self.sent)
        return self.sent.finish_reason is not None or (remaining is not None and remaining <= 0)

    def why_not(self) -> str | None:
        """Why the stream cannot be continued on another deployment; None when it can (or is finished)."""
        if self.finished:
            return None
        limit = self._resumer.settings.max_stream_resumes
        if self.resumes >= limit:
            return f"max_stream_resumes ({limit}) reached" if limit else "stream resumption is off " \
                "(max_stream_resumes: 0)"
        return why_not_resumable(self._parsed.endpoint, self._parsed.body.fields, self.sent)

    @property
    def continues(self) -> bool:
        """The next candidate should take the stream."""
        return not self.finished and self.why_not() is None

    def body_for(self, spec: DeploymentSpec) -> bytes:
        """The continuation as `spec` takes it: its own chat_continuation, else the router's."""
        style = spec.chat_continuation or self._resumer.settings.chat_continuation
        return continuation_body(self._parsed.endpoint, self._parsed.body.fields, spec.served_model, self.sent, style)

    def begin(self, live: LiveDeployment, now: float) -> Resumed:
        """`live` answered the continuation: its events go into the client's stream from here."""
        self.resumes += 1
        self._prefix_tokens = estimate_tokens(len(self.sent.text))
        sent, model = self.sent, self.cut_model
        metrics = self._resumer.metrics
        metrics.stream_resumes.labels(self._resumer.region, model, self.cut_by, self.cut_architecture,
                                      str(self.cut.reason)).inc()
        log.info(event("stream_resumed", model=model, from_deployment=self.cut_by, to_deployment=live.spec.name,
                       tokens_sent=sent.tokens, reason=self.cut.reason, resume=self.resumes,
                       after_ms=round((now - self.cut_at) * 1000, 1)))
        comment = (f"meridian resumed on {live.spec.name} after {sent.tokens} tokens from {self.cut_by} "
                   f"({self.cut.reason})")
        stitch = StreamStitch(sent, self.cut_usage, comment)
        return Resumed(self.response, self.written, stitch)

    async def end(self, on_usage: UsageSink | None, why: str | None = None) -> web.StreamResponse:
        """Ends the client's stream: whole when it is finished, else with an error event and no `[DONE]` saying
        why it could not be continued (`why`, or `why_not()`). Either way the client is charged what it got."""
        sent, parsed = self.sent, self._parsed
        if on_usage is not None:
            on_usage(self.settled())
        with contextlib.suppress(ConnectionResetError):  # the client went away meanwhile: nothing to tell it
            if self.finished:
                usage = self.cut_usage if parsed.usage_requested else None
                await self.response.write(closing_events(sent, usage, chat=parsed.endpoint == "chat/completions"))
                await self.response.write_eof()
                return self.response
            reason = why or self.why_not() or "no reason"
            log.info(event("stream_not_resumed", model=self.cut_model, deployment=self.cut_by, tokens_sent=sent.tokens,
                           cut=self.cut.reason, why=reason))
            await self.response.write(error_event(
                f"the backend stream was cut after {sent.tokens} tokens ({self.cut.reason} at {self.cut_by}) and "
                f"could not be finished: {reason}; retry the request", "stream_broken"))
        return self.response
