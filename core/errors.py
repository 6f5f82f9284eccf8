"""One error hierarchy: every failure says whether to retry, give up, or reconcile."""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    """What the engine should do next after an error."""

    RETRYABLE = "retryable"
    TERMINAL = "terminal"
    OUTCOME_UNKNOWN = "outcome_unknown"


class DexecError(Exception):
    """Base of every dexec error; fields are plain so Ray can pickle them across processes."""

    error_class: ErrorClass = ErrorClass.TERMINAL
    code: str = "error"

    def __init__(self, message: str, *, venue: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.venue = venue

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.message, self.venue))

    @property
    def retryable(self) -> bool:
        return self.error_class is ErrorClass.RETRYABLE


def reason(err: BaseException) -> str:
    """Return the one-line reason of an error, without a remote traceback.

    Ray re-raises a remote error as a subclass of both RayTaskError and the original class,
    whose str() carries the whole remote traceback; the original message is what a client
    should read.
    """
    if isinstance(err, DexecError):
        return err.message
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException) and cause is not err:
        return reason(cause)
    return f"{type(err).__name__}: {err}".splitlines()[0]


def _rebuild(cls: type[DexecError], message: str, venue: str | None) -> DexecError:
    return cls(message, venue=venue)


class RetryableError(DexecError):
    """Nothing happened on chain; the same step may be tried again after a backoff."""

    error_class = ErrorClass.RETRYABLE
    code = "retryable"


class TerminalError(DexecError):
    """Retrying cannot help; the order fails with this reason."""

    error_class = ErrorClass.TERMINAL
    code = "terminal"


class OutcomeUnknownError(DexecError):
    """The transaction may have landed: reconcile by signature, never retry blindly."""

    error_class = ErrorClass.OUTCOME_UNKNOWN
    code = "outcome_unknown"


class VenueTimeout(RetryableError):
    code = "timeout"


class RateLimited(RetryableError):
    code = "rate_limited"


class VenueUnavailable(RetryableError):
    code = "venue_unavailable"


class NoRoute(RetryableError):
    """No venue answered with a quote for this order (all failed or timed out)."""

    code = "no_route"


class BlockhashExpired(RetryableError):
    code = "blockhash_expired"


class TransientDatabaseError(RetryableError):
    code = "database_unavailable"


class Overloaded(RetryableError):
    """Refused before anything was stored: too many open orders or too many per minute."""

    code = "overloaded"

    def __init__(self, message: str, *, venue: str | None = None,
                 retry_after_s: float = 1.0) -> None:
        super().__init__(message, venue=venue)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_overloaded, (self.message, self.venue, self.retry_after_s))


def _rebuild_overloaded(message: str, venue: str | None, retry_after_s: float) -> Overloaded:
    return Overloaded(message, venue=venue, retry_after_s=retry_after_s)


class AtCapacity(Overloaded):
    """Refused before anything was stored: the engine as a whole is at capacity (not one
    account's limit), so every submission is refused alike until orders finish."""

    code = "at_capacity"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_at_capacity, (self.message, self.venue, self.retry_after_s))


def _rebuild_at_capacity(message: str, venue: str | None, retry_after_s: float) -> AtCapacity:
    return AtCapacity(message, venue=venue, retry_after_s=retry_after_s)


class LeaseLost(RetryableError):
    """Another executor may own the order now: stop touching it at once."""

    code = "lease_lost"


class WorkerLost(RetryableError):
    """The worker running an order died or was retired; the order record decides what next."""

    code = "worker_lost"


class SlippageExceeded(TerminalError):
    code = "slippage_exceeded"


class InsufficientFunds(TerminalError):
    code = "insufficient_funds"


class InsufficientLiquidity(TerminalError):
    code = "insufficient_liquidity"


class InvalidInput(TerminalError):
    code = "invalid_input"


class VenueRefused(TerminalError):
    """The venue answered, and said no (e.g. Raydium's `success: false` with its reason)."""

    code = "venue_refused"


class UnsafeTransaction(TerminalError):
    """A venue-built transaction failed the check before signing: it is never signed."""

    code = "unsafe_transaction"


class LimitExceeded(TerminalError):
    """Refused by a safety cap (per order, per day): the operator's limit, not load."""

    code = "limit_exceeded"


class IllegalTransition(TerminalError):
    code = "illegal_transition"


class OrderNotFound(TerminalError):
    code = "order_not_found"


class NotAuthenticated(TerminalError):
    """No valid API key came with the request."""

    code = "not_authenticated"


class NotPermitted(TerminalError):
    """The caller may not do this (a read key submitting, a test hook while they are off)."""

    code = "not_permitted"


class IdempotencyConflict(TerminalError):
    code = "idempotency_conflict"


class NotCancellable(TerminalError):
    """The order cannot be cancelled in its status: signed already, or finished."""

    code = "not_cancellable"


class TransactionUnconfirmed(OutcomeUnknownError):
    code = "unconfirmed"
