"""Errors a user can fix. The command lines turn them into one line on stderr and exit status 2."""
from __future__ import annotations

import sys
from contextlib import contextmanager


class UserError(ValueError):
    """Bad input or a missing ingredient; the message says what to do."""


@contextmanager
def exit_on_user_error():
    """Wrap a CLI main: a UserError (or a missing package) becomes one line on stderr and exit status 2."""
    try:
        yield
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except ModuleNotFoundError as err:
        print(f"error: the package '{err.name}' is missing; install it with: pip install -e .", file=sys.stderr)
        raise SystemExit(2) from None
