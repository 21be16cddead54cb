"""The error body of every 4xx and 5xx answer, its construction from validation errors, and
an exception's message in one line.

Every field error names the field (a path such as `candidates[3].age`), the rule that was
broken in words (the range, the allowed values, "required", ...) and a message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError
from pydantic_core import ErrorDetails

from payband_contracts.base import ContractModel


class FieldError(ContractModel):
    """One broken rule of one field."""

    field: str = Field(description="Path of the field, e.g. 'candidates[3].age'.")
    loc: list[str | int] = Field(description="The same path as a list of keys and indexes.")
    rule: str = Field(description="The rule in words, e.g. 'integer from 17 to 99'.")
    message: str


class ErrorBody(ContractModel):
    """The body of every error answer."""

    code: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)] = Field(
        description="Stable snake_case code, e.g. 'validation_failed', 'audit_unavailable'."
    )
    message: str = Field(description="What went wrong, in one sentence.")
    request_id: str | None = None
    errors: list[FieldError] = Field(default_factory=list)


# Rules for error types whose rule does not depend on the schema.
_TYPE_RULES = {
    "missing": "required",
    "extra_forbidden": "unknown field: not allowed",
    "int_type": "integer",
    "int_parsing": "integer",
    "int_from_float": "integer",
    "float_type": "number",
    "float_parsing": "number",
    "finite_number": "finite number",
    "string_type": "string",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
    "list_type": "array",
    "tuple_type": "array",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
    "uuid_type": "UUID",
    "uuid_parsing": "UUID",
    "datetime_type": "ISO 8601 date-time",
    "datetime_parsing": "ISO 8601 date-time",
    "datetime_from_date_parsing": "ISO 8601 date-time",
    "timezone_aware": "date-time with a time zone",
    "json_invalid": "valid JSON",
    "json_type": "valid JSON",
}


def first_line(error: BaseException) -> str:
    """An error's message in one line, for a message or a log: its first non-empty line,
    stripped (libpq and MLflow put the reason first and hints after); the driver's own error
    when ``error`` wraps one (SQLAlchemy's ``DBAPIError.orig``); the type's name when the
    message is empty."""
    wrapped = getattr(error, "orig", None)
    if isinstance(wrapped, BaseException):
        error = wrapped
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


def format_loc(loc: Sequence[str | int]) -> str:
    """('candidates', 3, 'age') -> 'candidates[3].age'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(body)"


def first_problem(error: ValidationError, whole: str = "the document") -> str:
    """The first problem of a validation error in one line: ``where: what``."""
    first = error.errors()[0]
    where = format_loc(first["loc"]) if first["loc"] else whole
    return f"{where}: {first['msg']}"


def _schema_at(
    schema: dict[str, Any], loc: Sequence[str | int], defs: dict[str, Any]
) -> dict[str, Any] | None:
    """The JSON Schema of the value at `loc`, following $ref, items and nullable unions."""
    node: dict[str, Any] | None = schema
    for part in [*loc, None]:
        while node is not None:
            if "$ref" in node:
                node = defs.get(node["$ref"].rsplit("/", 1)[-1])
            elif "anyOf" in node:
                branches = [b for b in node["anyOf"] if b.get("type") != "null"]
                node = branches[0] if len(branches) == 1 else None
            else:
                break
        if node is None or part is None:
            return node
        if isinstance(part, int):
            node = node.get("items") if node.get("type") == "array" else None
        else:
            node = node.get("properties", {}).get(part)
    return node


def _bounds_rule(node: dict[str, Any] | None, error_type: str, ctx: dict[str, Any]) -> str:
    node = node or {}
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    kind = "integer" if node.get("type") == "integer" else "number"
    if "minimum" in node and "maximum" in node:
        return f"{kind} from {low:g} to {high:g}"
    if error_type in {"greater_than_equal", "greater_than"}:
        bound = ctx.get("ge", ctx.get("gt", low))
        return f"{kind} {'at least' if error_type == 'greater_than_equal' else 'above'} {bound}"
    bound = ctx.get("le", ctx.get("lt", high))
    return f"{kind} {'at most' if error_type == 'less_than_equal' else 'below'} {bound}"


def rule_for(error: ErrorDetails, schema: dict[str, Any] | None = None) -> str:
    """The rule an error broke, in words, using the model's JSON Schema for ranges and values."""
    error_type = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if "rule" in ctx:
        return str(ctx["rule"])
    node = None
    if schema is not None:
        node = _schema_at(schema, error["loc"], schema.get("$defs", {}))
    if error_type in {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}:
        return _bounds_rule(node, error_type, ctx)
    if error_type == "enum":
        values = (node or {}).get("enum")
        if values:
            return "one of: " + ", ".join(str(v) for v in values)
        return f"one of: {ctx.get('expected', '?')}"
    if error_type in {"too_long", "too_short"}:
        what = "items" if (node or {}).get("type") == "array" else "entries"
        if error_type == "too_long":
            return f"at most {ctx.get('max_length')} {what}"
        return (
            f"at least {ctx.get('min_length')} {what[:-1] if ctx.get('min_length') == 1 else what}"
        )
    if error_type in {"string_too_long", "string_too_short"}:
        limit = ctx.get("max_length", ctx.get("min_length"))
        return f"{'at most' if error_type == 'string_too_long' else 'at least'} {limit} characters"
    if error_type == "string_pattern_mismatch":
        return f"pattern {ctx.get('pattern')}"
    if error_type == "literal_error":
        return f"one of: {ctx.get('expected')}"
    return _TYPE_RULES.get(error_type, error_type)


@cache
def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def field_errors(
    exc: ValidationError | Iterable[ErrorDetails],
    model: type[BaseModel] | None = None,
    loc_prefix: Sequence[str | int] = (),
) -> list[FieldError]:
    """FieldErrors for every error of a pydantic ValidationError (or its `errors()` list, as
    FastAPI's RequestValidationError gives it).

    `model` is the model that was validated; its JSON Schema gives the ranges and allowed
    values. `loc_prefix` is dropped from the front of each location (e.g. FastAPI's 'body').
    """
    schema = _schema_of(model) if model is not None else None
    prefix = tuple(loc_prefix)
    details = exc.errors(include_url=False) if isinstance(exc, ValidationError) else exc
    result = []
    for error in details:
        loc = tuple(error["loc"])
        if prefix and loc[: len(prefix)] == prefix:
            loc = loc[len(prefix) :]
        error = {**error, "loc": loc}  # type: ignore[typeddict-item]
        result.append(
            FieldError(
                field=format_loc(loc),
                loc=list(loc),
                rule=rule_for(error, schema),
                message=error["msg"],
            )
        )
    return result


def validation_error_body(
    exc: ValidationError | Iterable[ErrorDetails],
    model: type[BaseModel] | None = None,
    *,
    request_id: str | None = None,
    loc_prefix: Sequence[str | int] = (),
) -> ErrorBody:
    """The error body for a request that failed validation."""
    errors = field_errors(exc, model, loc_prefix)
    noun = "error" if len(errors) == 1 else "errors"
    return ErrorBody(
        code="validation_failed",
        message=f"The request is invalid: {len(errors)} {noun}, see `errors`.",
        request_id=request_id,
        errors=errors,
    )
