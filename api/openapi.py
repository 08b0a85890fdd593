"""OpenAPI generation details Litestar leaves out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from litestar._openapi.schema_generation.plugins import StructSchemaPlugin

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Schema
    from litestar.typing import FieldDefinition

__all__ = ["StrictStructSchemaPlugin"]


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Documents `forbid_unknown_fields=True` structs as `additionalProperties: false`, so the published
    contract says what the server enforces: a request with an unknown field is rejected with 400."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if isinstance(info, msgspec.inspect.StructType) and info.forbid_unknown_fields:
            schema.additional_properties = False
        return schema
