"""Configuration errors: one line per problem, naming the file, the key path, the value and
what is allowed."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

class ConfigError(ValueError):
    """Bad configuration: one line per problem, all problems at once."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

# ---- validation errors as one line each -----------------------------------------------------------


def _fmt_value(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """Valid keys at `loc` (the parent of an unknown key), following nested model fields."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(part)
        if info is None:
            return []
        current = _model_in(info.annotation)
    return sorted(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] / Annotated[...] / dict[str, Model], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _problems(err: ValidationError, model: type[BaseModel], where: str, prefix: str = "",
              sources: dict[str, str] | None = None) -> list[str]:
    out = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if p not in ("function-after",))
        path = _key_path(((prefix,) if prefix else ()) + loc) or "(top level)"
        origin = _origin(path, sources, where) if sources else where
        if e["type"] == "extra_forbidden":
            valid = _field_names(model, loc[:-1])
            hint = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            out.append(f"{origin}: {path}: unknown key{did}; valid: {', '.join(valid) or '(none)'}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("missing",):
            out.append(f"{origin}: {path}: missing (required)")
        elif loc or e["type"] != "value_error":
            out.append(f"{origin}: {path}: {_fmt_value(e.get('input'))} is invalid: {msg}"
                       if e["type"] not in ("value_error", "assertion_error")
                       else f"{origin}: {path}: {msg}")
        else:
            out.append(f"{origin}: {path or '(top level)'}: {msg}")
    return out


def _key_path(loc: tuple) -> str:
    """`a.b.0.c`; a key that is not a plain name is quoted (`files['x; rm -rf .\\n']`), so that a
    problem stays one line whatever the key holds."""
    out = ""
    for part in loc:
        text = str(part)
        plain = isinstance(part, int) or (text.replace("_", "").replace("-", "").isalnum() and text.isascii()) \
            or text == "[key]"
        out += (("." if out else "") + text) if plain else f"[{_fmt_value(text)}]"
    return out


def _origin(path: str, sources: dict[str, str], fallback: str) -> str:
    """The layer(s) that set `path` or keys under it; recipe defaults only when nothing else did."""
    if path in sources:
        return sources[path]
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):  # an item of a list a layer set: that layer (grid.seeds.0)
        if ".".join(parts[:i]) in sources:
            return sources[".".join(parts[:i])]
    under = sorted({s for k, s in sources.items() if k.startswith(path + ".")})
    given = [s for s in under if not s.startswith("recipe ")]
    return " + ".join(given or under) or fallback


def validate(model: type[BaseModel], data: Any, where: str, prefix: str = "",
              sources: dict[str, str] | None = None):
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_problems(err, model, where, prefix, sources)) from None


def validate_flags(model: type[BaseModel], values: dict[str, Any], flags: dict[str, str]):
    """Command-line values into a schema model; errors name the flag (`--batch: 0 is invalid: ...`)."""
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return model.model_validate(given)
    except ValidationError as err:
        lines = []
        for e in err.errors(include_url=False):
            key = str(e["loc"][0]) if e["loc"] else ""
            flag = flags.get(key, key or model.__name__)
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{flag}: {_fmt_value(e.get('input'))} is invalid: {msg}" if e["loc"] else f"{flag}: {msg}")
        raise ConfigError(lines) from None
