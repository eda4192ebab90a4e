from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_markd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MARKD_* variable from the developer's shell may leak into a config under test."""
    for name in list(os.environ):
        if name.startswith("MARKD_"):
            monkeypatch.delenv(name)
