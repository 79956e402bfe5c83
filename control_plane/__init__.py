"""The control plane: leader election, telemetry aggregation, table computation and distribution."""
