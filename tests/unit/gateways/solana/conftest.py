"""The solana gateway tests' shared fixture: a seeded local cluster on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.kit.localnet import Cluster, local_cluster


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with local_cluster() as c:
        yield c
