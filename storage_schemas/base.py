"""A table = a pyarrow schema whose fields carry a one-line doc; writers validate against it."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


class SchemaError(ValueError):
    """A table does not match its declared schema; names the table, the field and the types."""


def col(name: str, type_: pa.DataType, doc: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    schema: pa.Schema

    @property
    def names(self) -> list[str]:
        return self.schema.names

    def field_docs(self) -> dict[str, str]:
        return {f.name: (f.metadata or {}).get(b"doc", b"").decode() for f in self.schema}

    def from_rows(self, rows: list[dict]) -> pa.Table:
        """Build a validated table from row dicts (missing nullable fields become null)."""
        columns = {}
        for f in self.schema:
            values = [r.get(f.name) for r in rows]
            if not f.nullable:
                for i, v in enumerate(values):
                    if v is None:
                        raise SchemaError(f"table {self.name}: row {i}: field '{f.name}' is required, got null")
            try:
                columns[f.name] = pa.array(values, type=f.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise SchemaError(f"table {self.name}: field '{f.name}' ({f.type}): {exc}") from None
        return pa.Table.from_pydict(columns, schema=self.schema)

    def validate(self, table: pa.Table, *, where: str = "") -> pa.Table:
        """Check names, types and nullability; return the table cast to the exact schema."""
        at = f" in {where}" if where else ""
        have = {f.name: f for f in table.schema}
        for f in self.schema:
            got = have.get(f.name)
            if got is None:
                raise SchemaError(f"table {self.name}{at}: missing field '{f.name}' (expected {f.type})")
            if not got.type.equals(f.type):
                try:
                    table = table.set_column(table.schema.get_field_index(f.name), f.name,
                                             table[f.name].cast(f.type))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise SchemaError(
                        f"table {self.name}{at}: field '{f.name}' expected {f.type}, got {got.type}") from None
            if not f.nullable and table[f.name].null_count:
                raise SchemaError(f"table {self.name}{at}: field '{f.name}' has {table[f.name].null_count} nulls")
        extra = [n for n in table.schema.names if n not in self.schema.names]
        if extra:
            raise SchemaError(f"table {self.name}{at}: unexpected fields {extra}")
        return table.select(self.schema.names).cast(self.schema)
