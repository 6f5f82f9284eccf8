"""Shared by every test: the helpers of tests/kit assert with pytest's detailed messages."""

import pytest

pytest.register_assert_rewrite("tests.kit")
