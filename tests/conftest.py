"""Suite-wide guards: a run that collects no test fails instead of passing quietly."""

from __future__ import annotations

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# tests/ has no __init__.py, so pytest puts tests/ itself on sys.path before importing this file.
pytest_plugins = ["fixtures.services", "fixtures.throwaway_ca"]
