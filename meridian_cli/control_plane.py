"""`meridian control-plane --config FILE [--grpc-port P] [--admin-port P] [--admin-grpc-port P]
[--port-file F] [--ports-file F]`: runs one control-plane replica (docs/control-plane-operations.md).

`--port-file` receives the admin HTTP port (where /health is), as with every Meridian server, so that
`start_service` can launch it; `--ports-file` receives JSON with every bound port and address.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
from pathlib import Path

# Each router's stream holds long-lived objects (its call, reader task, queue and session) and every push allocates
# a few per stream; at the default thresholds the collector ran so often that it took a sixth of a replica's CPU
# at 1,000 routers. Young collections a seventieth as often, full ones half as often: 18 % less CPU per push, the
# same memory (docs/benchmarks.md, `meridian bench propagation`).
COLLECTOR_THRESHOLDS = (50_000, 20, 20)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("control-plane", help="run a control-plane replica")
    parser.add_argument("--config", required=True, type=Path, help="control-plane config file (YAML)")
    parser.add_argument("--replica-id", help="overrides replica_id (default <hostname>-<pid>)")
    parser.add_argument("--grpc-port", type=int, help="table distribution port (0 = any free port)")
    parser.add_argument("--admin-port", type=int, help="admin HTTP/JSON port (0 = any free port)")
    parser.add_argument("--admin-grpc-port", type=int, help="admin gRPC port (0 = any free port)")
    parser.add_argument("--port-file", type=Path, help="write the bound admin HTTP port here once serving")
    parser.add_argument("--ports-file", type=Path, help="write every bound port here as JSON once serving")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from control_plane.config import default_replica_id, load_control_plane_config
    from control_plane.replica import ListenPorts, Replica, ReplicaStartError
    from meridian_common.config_loading import ConfigError
    from meridian_common.event_loop import run
    from meridian_common.logging_setup import configure_logging

    configure_logging("control-plane")
    try:
        config = load_control_plane_config(args.config)
    except ConfigError as error:
        print(f"meridian control-plane: {error}", file=sys.stderr)
        return 2
    replica_id = args.replica_id or config.replica_id or default_replica_id(socket.gethostname(), os.getpid())
    token = os.environ.get(config.admin.token_env) if config.admin.token_env else None
    ports = ListenPorts(grpc=args.grpc_port, admin=args.admin_port, admin_grpc=args.admin_grpc_port)
    try:
        replica = Replica(config, replica_id=replica_id, token=token or None, ports=ports)
    except ReplicaStartError as error:
        print(f"meridian control-plane: {error}", file=sys.stderr)
        return 2
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    return run(replica.run(port_file=args.port_file, ports_file=args.ports_file))
