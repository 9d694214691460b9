"""The JSON wire, once: camelCase models, and reading JSON into them with errors that
name the field.

Every boundary (CRD objects, HTTP bodies, messages) validates through `validate`, so a bad
value is reported once, the same way: a `ValidationError` whose field is the camelCase JSON
path (`spec.port`, `tasks[3].timeoutSeconds`).
"""

from __future__ import annotations

from typing import Any, Final, TypeVar

import pydantic
from pydantic import ConfigDict
from pydantic.alias_generators import to_camel

from agent_mesh.domain.errors import ValidationError

M = TypeVar("M", bound=pydantic.BaseModel)


class WireModel(pydantic.BaseModel):
    """Base of every model on the wire: camelCase in JSON, snake_case in Python (either is
    accepted on input). Unknown fields are ignored; a subclass that refuses them, or is
    frozen, says so in its own `model_config` (merged with this one)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


STRICT: Final = ConfigDict(extra="forbid", frozen=True)
"""`model_config` of a WireModel that refuses unknown fields (a misspelt field is an error,
not a default) and cannot be changed once read."""


def validate(model: type[M], data: Any, where: str = "") -> M:
    """`data` as a `model`; the first problem raised as a ValidationError naming its field,
    prefixed by `where` (the path of `data` in its document, `""` for a whole body)."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        field = json_path(first["loc"], where)
        raise ValidationError(f"{field or 'body'}: {first['msg']}", field=field or "body") from None


def validate_json(model: type[M], raw: str | bytes, what: str) -> M:
    """The JSON document `raw` as a `model`, parsed and validated in one pass; the first
    problem raised as a ValidationError naming its field (`tasks[3].taskUid`, `body` when
    `raw` is not JSON at all), its message saying which document (`what`) it was."""
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        field = json_path(first["loc"]) or "body"
        raise ValidationError(f"{what} is invalid: {field}: {first['msg']}", field=field) from None


def json_path(loc: tuple[int | str, ...], where: str = "") -> str:
    """A pydantic error location as a JSON path: `tasks[3].timeoutSeconds`."""
    out = where
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
