"""Command-line options backed by environment variables: every setting of every command
has one, named in its help, so a setting can live in a shell profile or a CI job."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any, Final

from agent_mesh.commands import CommandError

TRUE: Final = frozenset({"1", "true", "yes", "on"})
FALSE: Final = frozenset({"0", "false", "no", "off"})


def setting(
    parser: argparse.ArgumentParser,
    *flags: str,
    env: str,
    help: str,
    type: Callable[[str], Any] = str,
    **kwargs: Any,
) -> argparse.Action:
    """An option whose default comes from the environment variable `env` (named in its
    help): the flag wins, then the variable, then the default. A variable that does not
    parse is refused naming it and its rule, as a bad flag is, when its command runs."""
    action = kwargs.get("action")
    raw = os.environ.get(env, "")
    if raw:
        try:
            kwargs["default"] = from_environment(env, raw, action, type, kwargs.get("choices"))
        except CommandError as error:  # said only when this command runs
            parser.set_defaults(env_error=parser.get_default("env_error") or str(error))
    if action not in ("store_true", "store_false"):
        kwargs["type"] = type
    return parser.add_argument(*flags, help=f"{help} [env {env}]", **kwargs)


def from_environment(
    env: str,
    raw: str,
    action: str | None,
    type: Callable[[str], Any],
    choices: Sequence[Any] | None,
) -> Any:
    if action in ("store_true", "store_false"):
        value = raw.strip().lower()
        if value not in TRUE | FALSE:
            raise CommandError(f"{env}={raw}: must be true or false (or 1/0, yes/no, on/off)")
        return value in TRUE  # the variable states the setting (dest)
    try:
        if action == "append":
            return [type(v.strip()) for v in raw.split(",") if v.strip()]
        parsed = type(raw)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise CommandError(f"{env}={raw}: {exc}") from exc
    if choices is not None and parsed not in choices:
        raise CommandError(f"{env}={raw}: must be one of {', '.join(map(str, choices))}")
    return parsed


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return value


def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None


def label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, not {text!r}")
    return key, value
