"""A candidate in its own process, for the election tests: campaigns, prints `leader <epoch>` once elected,
resigns on SIGTERM, and exits when its leadership ends or its bounded lifetime runs out."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import aetcd

from control_plane.election.campaign import Election
from control_plane.election.identity import CandidateIdentity
from control_plane.election.lease_session import LeaseSession


async def run(args: argparse.Namespace) -> int:
    async with aetcd.Client(host="127.0.0.1", port=args.port, timeout=2) as client:
        session = await LeaseSession.open(client, args.ttl_s)
        identity = CandidateIdentity(args.id, os.getpid(), "http://127.0.0.1:0", "127.0.0.1:0")
        election = Election(session, args.prefix, identity.encode())
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        epoch = await election.campaign(timeout_s=args.lifetime_s)
        print(f"leader {epoch}", flush=True)
        stopping = asyncio.ensure_future(stop.wait())
        deposed = asyncio.ensure_future(election.wait_not_leader())
        await asyncio.wait({stopping, deposed}, timeout=args.lifetime_s, return_when=asyncio.FIRST_COMPLETED)
        deposed.cancel()
        stopping.cancel()
        if stop.is_set():
            await election.resign()
            print("resigned", flush=True)
            return 0
        await session.close()
        return 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--ttl-s", type=int, default=2)
    parser.add_argument("--lifetime-s", type=float, default=30.0)
    raise SystemExit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
