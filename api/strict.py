"""Bodies read as their schema says. Litestar converts request data leniently (0 becomes false, "5" becomes
5), which accepts input the published JSON Schema forbids. `strict_json` decodes the same way, then refuses
any field, nested ones too, whose JSON type the schema does not allow (an integral float still counts as an
integer, as JSON Schema says)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException

__all__ = ["strict_json"]

T = TypeVar("T", bound=msgspec.Struct)


def _accepts(info: msgspec.inspect.Type, value: Any) -> bool:
    if isinstance(info, msgspec.inspect.UnionType):
        return any(_accepts(t, value) for t in info.types)
    if isinstance(info, msgspec.inspect.Metadata):
        return _accepts(info.type, value)
    if isinstance(info, msgspec.inspect.NoneType):
        return value is None
    if isinstance(info, msgspec.inspect.BoolType):
        return isinstance(value, bool)
    if isinstance(info, msgspec.inspect.IntType):
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if isinstance(info, msgspec.inspect.FloatType):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(info, msgspec.inspect.StrType | msgspec.inspect.DateTimeType | msgspec.inspect.UUIDType
                  | msgspec.inspect.DateType):
        return isinstance(value, str)
    if isinstance(info, msgspec.inspect.LiteralType):
        return value in info.values
    if isinstance(info, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
        return isinstance(value, list) and all(_accepts(info.item_type, v) for v in value)
    if isinstance(info, msgspec.inspect.TupleType):
        return isinstance(value, list)
    if isinstance(info, msgspec.inspect.DictType):
        return isinstance(value, dict) and all(_accepts(info.value_type, v) for v in value.values())
    if isinstance(info, msgspec.inspect.StructType):
        return isinstance(value, dict) and all(
            _accepts(f.type, value[f.encode_name]) for f in info.fields if f.encode_name in value)
    return True  # Unset and anything else: msgspec's own decoding decides


async def strict_json(request: Request[Any, Any, Any], kind: type[T]) -> T:
    body = await request.body()
    try:
        value = msgspec.json.decode(body, type=kind, strict=False)
        raw = msgspec.json.decode(body)
    except msgspec.ValidationError as exc:
        raise ValidationException(detail=f"Invalid body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ValidationException(detail="The body is not valid JSON.") from exc
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        if isinstance(raw, dict) and field.encode_name in raw and not _accepts(field.type, raw[field.encode_name]):
            raise ValidationException(detail=f"Invalid body: {field.encode_name} has the wrong type.")
    return value
