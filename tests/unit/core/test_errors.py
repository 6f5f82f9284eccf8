"""Unit tests for the errors: they cross process boundaries intact, and their codes differ."""

from __future__ import annotations

import pickle

import pytest

from core import errors
from core.errors import DexecError, Overloaded, SlippageExceeded

ALL_ERRORS = sorted(
    (obj for obj in vars(errors).values()
     if isinstance(obj, type) and issubclass(obj, DexecError)),
    key=lambda cls: cls.__name__,
)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_errors_survive_pickle_with_class_message_and_venue(cls: type[DexecError]) -> None:
    error = cls("raydium answered 503", venue="raydium")
    restored = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert type(restored) is cls
    assert restored.message == "raydium answered 503"
    assert str(restored) == "raydium answered 503"
    assert restored.venue == "raydium"
    assert restored.code == cls.code
    assert restored.error_class is cls.error_class
    assert restored.retryable == error.retryable


def test_error_without_venue_pickles_as_none() -> None:
    restored = pickle.loads(pickle.dumps(SlippageExceeded("too far")))  # noqa: S301
    assert isinstance(restored, SlippageExceeded)
    assert restored.venue is None


def test_extra_fields_survive_pickle_too() -> None:
    error = Overloaded("too many open orders", retry_after_s=7.0)
    restored = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert type(restored) is Overloaded
    assert restored.retry_after_s == 7.0
    assert restored.message == "too many open orders"


def test_error_codes_are_unique() -> None:
    codes = [cls.code for cls in ALL_ERRORS]
    assert len(codes) == len(set(codes))
