"""`meridian deploy compose|k8s [--topology FILE] [--out DIR] [--image IMAGE]`: renders the compose stack or the
Kubernetes manifests of a topology (docs/deployment.md). The committed docker-compose.yml, deploy/ and
deploy/k8s/ are these commands' output for the bundled topology."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# target -> (help, default --out)
_TARGETS = {
    "compose": ("docker-compose.yml and the deploy/ files it mounts, under --out (the repository, the build "
                "context)", Path(".")),
    "k8s": ("Kubernetes manifests, one file per component and per region, into --out", Path("deploy/k8s")),
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from regions.deploy.images import MERIDIAN_IMAGE
    from regions.topology import DEFAULT_TOPOLOGY

    parser = subparsers.add_parser("deploy", help="render the compose stack or Kubernetes manifests of a topology",
                                   description="Renders a deployment of a topology; edit the topology and render "
                                               "again rather than editing the output.")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (help_text, default_out) in _TARGETS.items():
        target = targets.add_parser(name, help=help_text, description=help_text)
        target.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY,
                            help="topology file (default: the bundled regions/topology.yaml)")
        target.add_argument("--out", type=Path, default=default_out, help=f"output directory (default {default_out})")
        target.add_argument("--image", default=MERIDIAN_IMAGE,
                            help=f"the Meridian image the containers run (default {MERIDIAN_IMAGE})")
        target.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from meridian_common.config_loading import ConfigError
    from regions.deploy.compose import render_compose
    from regions.deploy.compose_wiring import PortPlanError
    from regions.deploy.files import RenderWriteError, write_files
    from regions.deploy.k8s import render_k8s
    from regions.deploy.options import RenderOptions, topology_label
    from regions.topology import load_topology

    render = {"compose": render_compose, "k8s": render_k8s}[args.target]
    try:
        topology = load_topology(args.topology)
        files = render(topology, RenderOptions(source=topology_label(args.topology), image=args.image))
        written = write_files(files, args.out)
    except (ConfigError, PortPlanError, RenderWriteError) as error:
        print(f"meridian deploy {args.target}: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
