"""`meridian sim-backend [--model M] [--profile P] ...`: runs the OpenAI-compatible backend simulator."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from meridian_common.catalog import ChatContinuation
from simulator.profiles import Profile
from simulator.settings import DEFAULT_MODEL, SettingsError, SimulatorSettings, UsageFormat

_DEFAULTS = SimulatorSettings()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sim-backend", help="run the OpenAI-compatible backend simulator",
        description="An OpenAI-compatible model server that generates filler text with the latency of a "
                    "real one under load (see docs/simulator.md).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default %(default)s)")
    parser.add_argument("--port", type=int, default=8000,
                        help="listen port; 0 = any free port (default %(default)s)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="served model name (default %(default)s)")
    parser.add_argument("--profile", choices=[p.value for p in Profile], default=_DEFAULTS.profile.value,
                        help="architecture whose latency-vs-load curve to follow (default %(default)s)")
    parser.add_argument("--ttft-ms", type=float, default=_DEFAULTS.ttft_ms,
                        help="time to first token at no load, ms (default %(default)s)")
    parser.add_argument("--itl-ms", type=float, default=_DEFAULTS.itl_ms,
                        help="inter-token latency at no load, ms (default %(default)s)")
    parser.add_argument("--capacity", type=int, default=_DEFAULTS.capacity,
                        help="requests generated at once; more wait in a FIFO queue (default %(default)s)")
    parser.add_argument("--error-rate", type=float, default=_DEFAULTS.error_rate,
                        help="probability that a request gets HTTP 500 (default %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one)")
    parser.add_argument("--usage-format", choices=[u.value for u in UsageFormat],
                        default=_DEFAULTS.usage_format.value,
                        help="how token usage is reported (default %(default)s)")
    parser.add_argument("--output-tokens", type=int, default=_DEFAULTS.output_tokens,
                        help="tokens generated when a request sets no max_tokens; with --output-tokens-sigma, "
                             "their median (default %(default)s)")
    parser.add_argument("--output-tokens-sigma", type=float, default=_DEFAULTS.output_tokens_sigma,
                        help="log-normal spread of that length; 0 = always --output-tokens (default %(default)s)")
    parser.add_argument("--throttle-rate", type=float, default=_DEFAULTS.throttle_rate,
                        help="probability that a request gets HTTP 429 (default %(default)s)")
    parser.add_argument("--retry-after-s", type=float, default=None,
                        help="the Retry-After those 429s carry, in seconds (default: none)")
    parser.add_argument("--prefill-ms-per-1k", type=float, default=_DEFAULTS.prefill_ms_per_1k,
                        help="prefill time per 1,000 uncached prompt tokens at no load, ms, before the profile's "
                             "attention growth; applies when --ttft-ms is above 0 (default %(default)s)")
    parser.add_argument("--kv-cache-tokens", type=int, default=_DEFAULTS.kv_cache_tokens,
                        help="KV cache size in tokens; a request reserves prompt + output tokens (a hybrid a "
                             "quarter, linear-attention none) and waits while that does not fit "
                             "(default %(default)s)")
    parser.add_argument("--prefix-cache-blocks", type=int, default=_DEFAULTS.prefix_cache_blocks,
                        help="256-character prompt blocks the prefix cache keeps, LRU; 0 disables it "
                             "(default %(default)s)")
    parser.add_argument("--cut-after-tokens", type=int, default=_DEFAULTS.cut_after_tokens,
                        help="cut every longer stream after this many tokens (half an event, then the connection "
                             "closed); 0 = off (default %(default)s)")
    parser.add_argument("--cut-rate", type=float, default=_DEFAULTS.cut_rate,
                        help="probability that a stream is cut that way at a random token (default %(default)s)")
    parser.add_argument("--chat-continuation", choices=[c.value for c in ChatContinuation],
                        default=_DEFAULTS.chat_continuation.value,
                        help="how a chat's final assistant message is continued: vllm (continue_final_message with "
                             "add_generation_prompt: false) or prefill (as it is; vLLM's fields refused with 400) "
                             "(default %(default)s)")
    parser.add_argument("--api-key-env", metavar="VAR",
                        help="environment variable holding the key every /v1 request must send as a bearer "
                             "token (default: no key)")
    parser.set_defaults(handler=_run)


def settings_from_args(args: argparse.Namespace) -> SimulatorSettings:
    api_key = None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise SettingsError("api_key_env", f"the environment variable {args.api_key_env!r} is unset or empty")
    return SimulatorSettings(
        model=args.model, profile=Profile(args.profile), ttft_ms=args.ttft_ms, itl_ms=args.itl_ms,
        capacity=args.capacity, error_rate=args.error_rate, output_tokens=args.output_tokens,
        output_tokens_sigma=args.output_tokens_sigma, usage_format=UsageFormat(args.usage_format), seed=args.seed,
        throttle_rate=args.throttle_rate, retry_after_s=args.retry_after_s, api_key=api_key,
        prefill_ms_per_1k=args.prefill_ms_per_1k, kv_cache_tokens=args.kv_cache_tokens,
        prefix_cache_blocks=args.prefix_cache_blocks, cut_after_tokens=args.cut_after_tokens,
        cut_rate=args.cut_rate, chat_continuation=ChatContinuation(args.chat_continuation),
    )


def _run(args: argparse.Namespace) -> int:
    from meridian_common.event_loop import run
    from meridian_common.logging_setup import configure_logging
    from simulator.server import create_app, serve

    try:
        settings = settings_from_args(args)
    except SettingsError as error:
        print(f"meridian sim-backend: --{error.field.replace('_', '-')}: {error.message}", file=sys.stderr)
        return 2
    configure_logging("sim-backend")
    return run(serve(create_app(settings), args.host, args.port, port_file=args.port_file))
