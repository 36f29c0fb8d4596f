"""DevicePool retries what a dead device or link causes, and nothing else (a bug is not a dead device)."""

from __future__ import annotations

import pytest

from edgeprune.errors import DeviceError
from edgeprune.latency.rpc import DevicePool, RetryPolicy


class _Session:
    name = "dev"


@pytest.fixture()
def pool(monkeypatch):
    p = DevicePool("127.0.0.1:1", "k", retry=RetryPolicy(retries=2, backoff_s=0.0))
    monkeypatch.setattr(p, "_acquire", lambda: _Session())
    return p


def test_a_bug_is_raised_at_once_not_retried(pool):
    calls = []

    def buggy(sess):
        calls.append(1)
        raise KeyError("not a device problem")

    with pytest.raises(KeyError):
        pool.call(buggy, "measurement")
    assert calls == [1] and pool.failures == []


@pytest.mark.parametrize("exc", [ConnectionResetError("peer gone"), TimeoutError("slow"),
                                 RuntimeError("RPC session closed: socket error")])
def test_link_failures_are_retried_then_reported(pool, exc):
    calls = []

    def dying(sess):
        calls.append(1)
        raise exc

    with pytest.raises(DeviceError, match="failed on 3 attempts"):
        pool.call(dying, "measurement")
    assert len(calls) == 3 and len(pool.failures) == 3


def test_a_retry_that_succeeds_returns_the_value(pool):
    calls = []

    def flaky(sess):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("broken pipe")
        return 42

    assert pool.call(flaky, "measurement") == 42 and len(pool.failures) == 1
