"""What the demo steps share (``demo.py``, ``demo_model.py``, ``demo_cache.py``): printing a step and
checking that something is refused. Below all three; imports none of them."""

from __future__ import annotations

from collections.abc import Callable

import click

from ..errors import OrtsealError


class DemoFailure(Exception):
    """A demo step did not behave as ortseal promises."""


def say(text: str) -> None:
    click.echo(text)


def expect_refused(what: str, fn: Callable[[], object]) -> None:
    """Run ``fn``, which must fail with an ortseal error; print what it got."""
    try:
        fn()
    except OrtsealError as exc:
        say(f"  {what}: refused with {type(exc).__name__}: {exc}")
        return
    raise DemoFailure(f"{what} was NOT refused")
