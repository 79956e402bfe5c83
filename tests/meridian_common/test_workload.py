"""The workload model: draws stay in bounds and follow the configured medians and shares, bodies have the prompt
length they were drawn with, TINY stays tiny, and invalid configs and flags name their field."""

from __future__ import annotations

import argparse
import math
import random
import statistics
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from meridian_cli.chaos import add_workload_flags, workload_overrides
from meridian_common.workload import (
    CHARS_PER_TOKEN,
    REALISTIC,
    TINY,
    RequestShape,
    WorkloadConfig,
    WorkloadOverrides,
    chat_body,
    draw,
    lognormal_quantile,
    lognormal_tokens,
    median_shape,
    shared_prefix_text,
    simulator_flags,
)

DRAWS = 4000


def _estimate(text: str) -> int:
    """The router's and the simulator's estimate."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@st.composite
def configs(draw_: st.DrawFn) -> WorkloadConfig:
    answer_median = draw_(st.integers(1, 4000))
    prompt_median = draw_(st.integers(1, 40000))
    return WorkloadConfig(
        answer_tokens_median=answer_median,
        answer_tokens_sigma=draw_(st.floats(0, 3)),
        answer_tokens_max=answer_median + draw_(st.integers(0, 5000)),
        prompt_tokens_median=prompt_median,
        prompt_tokens_sigma=draw_(st.floats(0, 3)),
        prompt_tokens_max=prompt_median + draw_(st.integers(0, 50000)),
        stream_share=draw_(st.floats(0, 1)),
        max_tokens_share=draw_(st.floats(0, 1)),
    )


@given(configs(), st.integers(0, 2**32))
def test_draws_stay_within_bounds(config: WorkloadConfig, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20):
        shape = draw(config, rng)
        assert 1 <= shape.answer_tokens <= config.answer_tokens_max
        assert 1 <= shape.prompt_tokens <= config.prompt_tokens_max
        if config.stream_share == 0:
            assert not shape.stream
        if config.max_tokens_share == 1:
            assert shape.sets_max_tokens


def test_the_same_seed_draws_the_same_requests() -> None:
    first, second = random.Random(7), random.Random(7)
    assert [chat_body("m", draw(REALISTIC, first), first) for _ in range(20)] == [
        chat_body("m", draw(REALISTIC, second), second) for _ in range(20)]


@pytest.mark.parametrize(
    "config",
    [REALISTIC,
     WorkloadConfig(answer_tokens_median=50, answer_tokens_sigma=0.3, prompt_tokens_median=2000,
                    prompt_tokens_sigma=0.5, stream_share=0.1, max_tokens_share=0.2),
     WorkloadConfig(answer_tokens_median=900, answer_tokens_max=20000, stream_share=0.9, max_tokens_share=1.0)],
)
def test_many_draws_follow_the_configured_medians_and_shares(config: WorkloadConfig) -> None:
    rng = random.Random(1)
    shapes = [draw(config, rng) for _ in range(DRAWS)]
    assert statistics.median(s.answer_tokens for s in shapes) == pytest.approx(config.answer_tokens_median, rel=0.1)
    assert statistics.median(s.prompt_tokens for s in shapes) == pytest.approx(config.prompt_tokens_median, rel=0.1)
    # Five standard deviations of a binomial share: a seeded test, but not a brittle one.
    for share, drawn in ((config.stream_share, sum(s.stream for s in shapes)),
                         (config.max_tokens_share, sum(s.sets_max_tokens for s in shapes))):
        assert abs(drawn / DRAWS - share) <= 5 * math.sqrt(share * (1 - share) / DRAWS) + 1e-9


def test_the_answer_tail_matches_its_quantiles() -> None:
    rng = random.Random(2)
    answers = sorted(draw(REALISTIC, rng).answer_tokens for _ in range(20000))
    for q in (0.5, 0.95, 0.99):
        assert answers[int(q * len(answers))] == pytest.approx(REALISTIC.answer_tokens_quantile(q), rel=0.1)
    assert REALISTIC.answer_tokens_quantile(0.99) > 1000  # the default has answers past 1,000 tokens
    assert max(answers) <= REALISTIC.answer_tokens_max


@pytest.mark.parametrize(
    ("median", "sigma", "q", "maximum", "expected"),
    [(200, 0.8, 0.5, 2048, 200), (200, 0.8, 0.95, 2048, 746), (200, 0.8, 0.99, 2048, 1286),
     (200, 0.0, 0.99, 2048, 200), (200, 3.0, 0.99, 2048, 2048), (1, 2.0, 0.01, 10, 1)],
)
def test_lognormal_quantile(median: int, sigma: float, q: float, maximum: int, expected: int) -> None:
    assert lognormal_quantile(median, sigma, q, maximum) == expected


def test_no_spread_draws_nothing() -> None:
    rng = random.Random(3)
    before = rng.getstate()
    assert lognormal_tokens(16, 0.0, 100, rng) == 16
    assert rng.getstate() == before


@settings(max_examples=60)
@given(st.integers(1, 32000), st.integers(0, 2**32))
def test_the_prompt_has_the_drawn_length(prompt_tokens: int, seed: int) -> None:
    rng = random.Random(seed)
    body = chat_body("m", RequestShape(prompt_tokens, 10, stream=False, sets_max_tokens=False), rng)
    estimate = _estimate(body["messages"][0]["content"])
    assert abs(estimate - prompt_tokens) <= max(1, 0.1 * prompt_tokens)


@pytest.mark.parametrize(
    ("stream", "sets_max_tokens", "expected_keys"),
    [(False, False, set()), (False, True, {"max_tokens"}), (True, False, {"stream", "stream_options"}),
     (True, True, {"stream", "stream_options", "max_tokens"})],
)
def test_the_body_says_only_what_the_shape_asks(stream: bool, sets_max_tokens: bool,
                                                expected_keys: set[str]) -> None:
    body = chat_body("m", RequestShape(40, 123, stream, sets_max_tokens), random.Random(0))
    assert set(body) - {"model", "messages"} == expected_keys
    assert body["model"] == "m" and body["messages"][0]["role"] == "user"
    if sets_max_tokens:
        assert body["max_tokens"] == 123
    if stream:
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_prompts_differ_from_request_to_request() -> None:
    rng = random.Random(4)
    prompts = [chat_body("m", RequestShape(300, 1, False, False), rng)["messages"][0]["content"] for _ in range(200)]
    assert len(set(prompts)) == len(prompts)


@given(st.integers(0, 2**32))
def test_tiny_stays_tiny(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        shape = draw(TINY, rng)
        assert shape.answer_tokens <= 16 and shape.prompt_tokens <= 32
        assert not shape.stream and shape.sets_max_tokens  # a backend's natural length is not tiny


def test_tiny_answers_are_mostly_4_to_16_tokens() -> None:
    rng = random.Random(5)
    answers = [draw(TINY, rng).answer_tokens for _ in range(DRAWS)]
    assert sum(4 <= a <= 16 for a in answers) / len(answers) > 0.99


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"answer_tokens_median": 0}, "answer_tokens_median", "greater than or equal to 1"),
        ({"prompt_tokens_median": -5}, "prompt_tokens_median", "greater than or equal to 1"),
        ({"answer_tokens_sigma": -0.1}, "answer_tokens_sigma", "greater than or equal to 0"),
        ({"prompt_tokens_sigma": math.inf}, "prompt_tokens_sigma", "finite"),
        ({"answer_tokens_max": 100}, "answer_tokens_max", "must be >= answer_tokens_median (200)"),
        ({"prompt_tokens_median": 500, "prompt_tokens_max": 499}, "prompt_tokens_max",
         "must be >= prompt_tokens_median (500)"),
        ({"stream_share": 1.5}, "stream_share", "less than or equal to 1"),
        ({"max_tokens_share": -0.1}, "max_tokens_share", "greater than or equal to 0"),
        ({"shared_prefixes": -1}, "shared_prefixes", "greater than or equal to 0"),
        ({"shared_prefix_tokens": 0}, "shared_prefix_tokens", "greater than or equal to 1"),
        ({"answer_tokens": 10}, "answer_tokens", "Extra inputs"),
    ],
)
def test_invalid_configs_name_their_field(fields: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        WorkloadConfig(**fields)
    first = raised.value.errors()[0]
    assert first["loc"] == (field,)
    assert message in first["msg"]


def test_without_shared_prefixes_the_sequence_is_unchanged() -> None:
    """The prefix is drawn last and only when asked for: seeded runs of other workloads send what they sent."""
    plain, with_prefixes = random.Random(8), random.Random(8)
    config = REALISTIC.model_copy(update={"shared_prefixes": 4})
    for _ in range(50):
        shape, prefixed = draw(REALISTIC, plain), draw(config, with_prefixes)
        assert shape.prefix is None and shape.prefix_tokens == 0
        assert (prefixed.prompt_tokens, prefixed.answer_tokens, prefixed.stream) == \
            (shape.prompt_tokens, shape.answer_tokens, shape.stream)
        plain.randrange(4)  # the draw of the prefix


def test_shared_prefixes_spread_from_two_thirds_to_four_thirds_of_their_mean() -> None:
    config = WorkloadConfig(shared_prefixes=12, shared_prefix_tokens=3000)
    lengths = [config.shared_prefix_length(i) for i in range(12)]
    assert (lengths[0], lengths[-1]) == (2000, 4000) and lengths == sorted(lengths)
    assert statistics.mean(lengths) == pytest.approx(3000, abs=1)
    assert WorkloadConfig(shared_prefixes=1, shared_prefix_tokens=300).shared_prefix_length(0) == 300
    with pytest.raises(ValueError, match=r"prefix index must be in \[0, 12\)"):
        config.shared_prefix_length(12)
    assert "12 shared prefixes of 2000-4000 tokens" in config.describe()


def test_requests_start_with_one_of_the_shared_prefixes() -> None:
    config = WorkloadConfig(shared_prefixes=3, shared_prefix_tokens=600)
    rng = random.Random(9)
    shapes = [draw(config, rng) for _ in range(300)]
    assert {s.prefix for s in shapes} == {0, 1, 2}
    bodies = [chat_body("m", s, rng) for s in shapes]
    for shape, body in zip(shapes, bodies, strict=True):
        system, user = body["messages"]
        assert system == {"role": "system", "content": shared_prefix_text(shape.prefix, shape.prefix_tokens)}
        assert _estimate(system["content"]) == shape.prefix_tokens == config.shared_prefix_length(shape.prefix)
        assert _estimate(user["content"]) == shape.prompt_tokens
        assert shape.total_prompt_tokens == shape.prefix_tokens + shape.prompt_tokens
    # Prefixes differ from their first 256-character block (a prefix cache's block) on.
    assert len({shared_prefix_text(i, 600)[:256] for i in range(3)}) == 3


def test_the_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        REALISTIC.stream_share = 1.0  # type: ignore[misc]


def test_describe_names_the_median_and_the_tail() -> None:
    assert REALISTIC.describe().startswith("answers median 200 tokens (p95 746, p99 1286, max 2048)")


def test_the_median_shape_and_the_simulator_flags_follow_the_config() -> None:
    assert median_shape(REALISTIC, stream=True) == RequestShape(300, 200, stream=True, sets_max_tokens=True)
    assert simulator_flags(REALISTIC) == ["--output-tokens", "200", "--output-tokens-sigma", "0.8"]


# --- command-line overrides ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (WorkloadOverrides(), REALISTIC),
        (WorkloadOverrides(tiny=True), TINY),
        (WorkloadOverrides(stream_share=1.0), REALISTIC.model_copy(update={"stream_share": 1.0})),
        (WorkloadOverrides(answer_tokens_median=3000),
         REALISTIC.model_copy(update={"answer_tokens_median": 3000, "answer_tokens_max": 3000})),
        (WorkloadOverrides(answer_tokens_median=50, prompt_tokens_median=20),
         REALISTIC.model_copy(update={"answer_tokens_median": 50, "prompt_tokens_median": 20})),
        (WorkloadOverrides(tiny=True, stream_share=0.5), TINY.model_copy(update={"stream_share": 0.5})),
    ],
)
def test_overrides_apply_on_top_of_a_workload(overrides: WorkloadOverrides, expected: WorkloadConfig) -> None:
    assert overrides.apply(REALISTIC) == expected


def _flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_workload_flags(parser)
    return parser.parse_args(list(argv))


def test_flags_become_overrides() -> None:
    assert workload_overrides(_flags()) == WorkloadOverrides()
    assert workload_overrides(_flags("--tiny-answers", "--answer-tokens-median", "12", "--stream-share", "0.25",
                                     "--prompt-tokens-median", "7")) == WorkloadOverrides(12, 7, 0.25, tiny=True)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(("--stream-share", "2"), "--stream-share"), (("--answer-tokens-median", "0"), "--answer-tokens-median"),
     (("--prompt-tokens-median", "-3"), "--prompt-tokens-median")],
)
def test_invalid_flags_are_named(argv: tuple[str, ...], flag: str) -> None:
    with pytest.raises(ValueError, match=f"^{flag}: "):
        workload_overrides(_flags(*argv))
