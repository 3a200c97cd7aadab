"""Configuration faults located by field path, and pydantic's errors in the words a config author reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration fault, located by a field path such as `spec.authorities[0].gpg.trustStore`."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def location_path(location: Sequence[int | str]) -> str:
    """`('spec', 'keys', 0, 'gpg')` -> `spec.keys[0].gpg`."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """Each pydantic error as (field path, message), in the words a config author reads."""
    found = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field is missing"
        found.append((location_path(error["loc"]), message))
    return found


def validate_spec(model: type[ModelT], raw: Any, path: str) -> ModelT:
    """Validate a plugin's configuration, raising ConfigError at the first faulty field."""
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        where, message = validation_errors(exc)[0]
        raise ConfigError(f"{path}.{where}" if where else path, message) from None
