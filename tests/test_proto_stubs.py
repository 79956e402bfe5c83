"""The committed protobuf stubs must be what protoc generates from proto/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_stubs_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_proto.py"), "--check"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr


def test_stubs_import_under_the_package_name() -> None:
    from meridian_proto import distribution_pb2_grpc, policy_pb2_grpc, routing_pb2, telemetry_pb2

    assert routing_pb2.RoutingTable(version=3).version == 3
    assert telemetry_pb2.TelemetrySample(requests=1).requests == 1
    assert hasattr(distribution_pb2_grpc, "TableDistributionStub")
    assert hasattr(policy_pb2_grpc, "AdminStub")
