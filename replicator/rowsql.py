"""Row writes of the applier as prepared SQL, built once per model.

The ORM's per-query machinery costs more than the fsync'd commit itself; apply runs a few
fixed statements per op, so they are built here once and executed on a plain cursor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from replicator.exceptions import InvalidChangeSetError
from replicator.routers import is_cluster_model

if TYPE_CHECKING:
    from replicator.models import ReplicatedModel


class ModelSQL:
    """Statements and value conversion for one replicated model on one connection."""

    def __init__(self, model: type[ReplicatedModel], connection: BaseDatabaseWrapper) -> None:
        self.model = model
        self.connection = connection
        quote = connection.ops.quote_name
        self.quote = quote
        self.table = quote(model._meta.db_table)
        self.pk = model._meta.pk
        self.pk_column = quote(self.pk.column)
        self.fields = {f.attname: f for f in model._meta.concrete_fields if f.attname != "version"}
        # (field, "does the target exist?") for each foreign key to another replicated model
        self.foreign_keys = [
            (
                f,
                f"SELECT 1 FROM {quote(f.related_model._meta.db_table)} WHERE {quote(f.target_field.column)} = %s",
            )
            for f in model._meta.concrete_fields
            if isinstance(f, models.ForeignKey) and is_cluster_model(f.related_model)
        ]
        # (referring model, "is this row referenced?") for each foreign key pointing here
        self.referrers = [
            (
                rel.related_model,
                f"SELECT 1 FROM {quote(rel.related_model._meta.db_table)} WHERE {quote(rel.field.column)} = %s",
            )
            for rel in model._meta.related_objects
            if isinstance(rel, models.ManyToOneRel) and is_cluster_model(rel.related_model)
        ]
        self._insert_sql: dict[tuple[str, ...], str] = {}
        self._update_sql: dict[tuple[str, ...], str] = {}
        self.delete_sql = f"DELETE FROM {self.table} WHERE {self.pk_column} = %s AND version = %s"
        self.version_sql = f"SELECT version FROM {self.table} WHERE {self.pk_column} = %s"

    def pk_value(self, raw: Any) -> tuple[Any, Any]:
        """(python value, database value) of a primary key from an op."""
        value = self.pk.to_python(raw)
        return value, self.pk.get_db_prep_value(value, self.connection)

    def values(self, raw_fields: dict[str, Any], *, create: bool) -> dict[str, Any]:
        """Python values of an op's fields (defaults filled in on create), pk excluded."""
        if not isinstance(raw_fields, dict):
            raise InvalidChangeSetError("op fields must be an object")
        values: dict[str, Any] = {}
        for attname, raw in raw_fields.items():
            field = self.fields.get(attname)
            if field is None:
                raise InvalidChangeSetError(f"{self.model._meta.label_lower} has no field {attname!r}")
            if not field.primary_key:
                values[attname] = field.to_python(raw)
        if create:
            for attname, field in self.fields.items():
                if attname not in values and not field.primary_key:
                    values[attname] = field.get_default()
        return values

    def db_values(self, values: dict[str, Any]) -> list[Any]:
        return [self.fields[a].get_db_prep_save(v, self.connection) for a, v in values.items()]

    def insert_sql(self, attnames: tuple[str, ...]) -> str:
        """INSERT that does nothing (rowcount 0) when the primary key exists already."""
        sql = self._insert_sql.get(attnames)
        if sql is None:
            columns = ", ".join([self.pk_column, "version", *(self.quote(self.fields[a].column) for a in attnames)])
            marks = ", ".join(["%s"] * (len(attnames) + 2))
            sql = f"INSERT INTO {self.table} ({columns}) VALUES ({marks}) ON CONFLICT ({self.pk_column}) DO NOTHING"
            self._insert_sql[attnames] = sql
        return sql

    def update_sql(self, attnames: tuple[str, ...]) -> str:
        """UPDATE guarded by the base version (rowcount 0 on a stale or missing row)."""
        sql = self._update_sql.get(attnames)
        if sql is None:
            sets = ", ".join([*(f"{self.quote(self.fields[a].column)} = %s" for a in attnames), "version = %s"])
            sql = f"UPDATE {self.table} SET {sets} WHERE {self.pk_column} = %s AND version = %s"
            self._update_sql[attnames] = sql
        return sql
