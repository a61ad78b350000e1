"""Fixtures of the identity unit suites: a builder for a whole identity service, and its default."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.unit.core.auth.rig import IdentityRig, build_rig


@pytest.fixture
def build() -> Callable[..., IdentityRig]:
    """`build(mfa=..., sessions=..., throttle=..., sso=...)`: a fresh service on fresh stores."""
    return build_rig


@pytest.fixture
def rig() -> IdentityRig:
    """No MFA, default session and throttle policies."""
    return build_rig()
