"""`meridian control-plane --config FILE [--grpc-port P] [--admin-port P] [--admin-grpc-port P]
[--port-file F] [--ports-file F]`: runs one control-plane replica (docs/control-plane-operations.md).

`--port-file` receives the admin HTTP port (where /health is), as with every Meridian server, so that
`start_service` can launch it; `--ports-file` receives JSON with every bound port and address.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path


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
    return run(replica.run(port_file=args.port_file, ports_file=args.ports_file))
