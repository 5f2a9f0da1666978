"""One declared table's writes: create, change, replace and a batch row, with the domain's
logic and rules applied, statuses moved along their transitions and children written with their
parent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from shared.declarations.products import Domain, Product
from shared.errors import NotFound, Problem
from shared.reading.values import parse_value
from shared.writing.inputs import (
    BodyShape,
    FieldRule,
    TableWrites,
    change_shape,
    create_shape,
    field_rule,
    key_shape,
)
from shared.writing.store import (
    TransactionContext,
    insert_row,
    lock_row,
    update_row,
    upsert_row,
)

# --- one table's writes ------------------------------------------------------------------


Precondition = Callable[[Any], Awaitable[None]]


class TableWriter:
    """The writes of one declared table: create, change, replace; domain logic and rules
    applied, statuses moved along their transitions, children written with their parent."""

    def __init__(self, domain: Domain, writes: TableWrites):
        product = domain.product(writes.product)
        assert product is not None
        self.domain = domain
        self.writes = writes
        self.product = product
        self.key = product.key[0]
        self.child: Product | None = None
        if writes.children:
            self.child = domain.product(writes.children.product)
        self.creation = create_shape(domain, writes)
        self.replacement = (
            create_shape(domain, writes, without=writes.upsert_key) if writes.upsert_key else None
        )
        self.natural = key_shape(domain, writes) if writes.upsert_key else None
        self.change_body = change_shape(domain, writes) if writes.updatable else None
        self.batch_body = self.creation  # a batch row is a whole row, natural key included
        self._models: dict[tuple[str, bool], type[BaseModel]] = {}

    def model(self, shape: BodyShape, *, strict: bool) -> type[BaseModel]:
        """The (cached) model of a body shape."""
        cache = (shape.name, strict)
        if cache not in self._models:
            self._models[cache] = shape.model(strict=strict)
        return self._models[cache]

    async def create(self, context: TransactionContext, values: dict[str, Any]) -> Any:
        """Insert a new row (and its children); its key."""
        row = dict(values)
        children: list[dict[str, Any]] = []
        if self.writes.children:
            children = [dict(c) for c in row.pop(self.writes.children.field)]
        transitions = self.writes.transitions
        if transitions:
            status = row.get(transitions.column) or transitions.initial[0]
            row[transitions.column] = status
            if status in transitions.stamps:
                row[transitions.stamps[status]] = context.now
        await self.writes.logic.before_create(context, row, children)
        self.writes.check_row(row)
        key = await insert_row(context.conn, self.product, row)
        if self.writes.children and self.child:
            for child in children:
                child[self.writes.children.parent_key] = key
                await insert_row(context.conn, self.child, child)
        return key

    async def change(
        self,
        context: TransactionContext,
        key: Any,
        changes: dict[str, Any],
        precondition: Precondition,
    ) -> bool:
        """Apply changes to the row with this key, locked first; False if there is none."""
        current = await lock_row(context.conn, self.product, {self.key: key})
        await precondition(key if current is not None else None)
        if current is None:
            return False
        transitions = self.writes.transitions
        if transitions and transitions.column in changes:
            old, new = current[transitions.column], changes[transitions.column]
            transitions.check(old, new)
            if new != old and new in transitions.stamps:
                changes[transitions.stamps[new]] = context.now
        await self.writes.logic.before_update(context, current, changes)
        self.writes.check_row({**current, **changes})
        await update_row(
            context.conn,
            self.product,
            key,
            {name: value for name, value in changes.items() if current.get(name) != value},
        )
        return True

    async def replace(
        self,
        context: TransactionContext,
        values: dict[str, Any],
        precondition: Precondition | None = None,
    ) -> tuple[Any, bool]:
        """Insert or replace the row with the natural key in `values`; its key and whether it
        was created."""
        row = dict(values)
        natural = {name: row[name] for name in self.writes.upsert_key}
        current = await lock_row(context.conn, self.product, natural)
        if precondition:
            await precondition(current[self.key] if current is not None else None)
        await self.writes.logic.before_create(context, row, [])
        self.writes.check_row(row)
        if current is None:
            return await upsert_row(context.conn, self.product, row, self.writes.upsert_key)
        transitions = self.writes.transitions
        if transitions and transitions.column in row:
            transitions.check(current[transitions.column], row[transitions.column])
        key = current[self.key]
        changed = {name: value for name, value in row.items() if current.get(name) != value}
        await update_row(context.conn, self.product, key, changed)
        return key, False

    def key_rule(self) -> FieldRule:
        """The rule of the table's key column (its JSON schema in the path of a route)."""
        column = self.product.column(self.key)
        assert column is not None
        return field_rule(self.product, column)

    def path_key(self, raw: str) -> Any:
        """The key in a route's path, as its column's type (a 400 naming it otherwise)."""
        return parse_value(self.key_rule().column, raw, parameter=self.key)

    def absent(self, key: Any) -> Problem:
        """The 404 of a key no row has."""
        return NotFound(
            f"No {self.product.name} row has {self.key} = {key}.",
            product=self.product.name,
            key=str(key),
        )

    async def write(self, context: TransactionContext, values: dict[str, Any]) -> tuple[Any, bool]:
        """A batch row: created, or replacing its natural key's row (daily upserts)."""
        if self.writes.upsert_key:
            return await self.replace(context, values)
        return await self.create(context, values), True
