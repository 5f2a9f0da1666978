"""What a domain declares about the writes of its tables (next to its products): the columns a
body gives, the columns a PATCH may change, natural keys, defaults, status transitions, rules
between fields, child rows and its own logic; and the problems those declarations raise. The
machinery that turns them into input models and routes is shared.writing.inputs and shared.writing.routes.

It imports no other declaration module at run time, so shared.declarations.products can check a domain's
write declarations when the domain is declared (no import cycle)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.errors import Problem

if TYPE_CHECKING:
    from shared.declarations.products import Domain


# --- problems ------------------------------------------------------------------------------


class InvalidBody(Problem):
    """A body that breaks the declarations: each bad field named in `errors`."""

    status = 422
    code = "invalid_body"
    title = "Invalid body"

    def __init__(self, errors: Sequence[FieldError], *, detail: str | None = None):
        shown = "; ".join(f"{e.field}: {e.message}" for e in errors[:10])
        super().__init__(
            detail or f"The body is not valid: {shown}.",
            errors=[e.document() for e in errors],
        )
        self.field_errors = list(errors)


class ForbiddenTransition(Problem):
    status = 409
    code = "forbidden_transition"
    title = "Forbidden status transition"

    def __init__(self, column: str, current: str, new: str, allowed: tuple[str, ...]):
        to = ", ".join(allowed) if allowed else "none (it is final)"
        moves: dict[str, Any] = {"from": current, "to": new, "allowed": list(allowed)}
        super().__init__(
            f"'{column}' may not change from '{current}' to '{new}'; from '{current}' it may "
            f"change to: {to}.",
            field=column,
            **moves,
        )


@dataclass(frozen=True)
class FieldError:
    """What is wrong with one field of a body (dotted path: `items.0.product_id`)."""

    field: str
    message: str

    def document(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


# --- declarations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Transitions:
    """The lifecycle of a status column: where a row may start and where it may go next.

    Setting the status a row already has is no change and always allowed. Entering a status
    named in `stamps` sets that timestamp column to the transaction's time."""

    column: str
    allowed: Mapping[str, tuple[str, ...]] = field(hash=False)
    initial: tuple[str, ...]
    stamps: Mapping[str, str] = field(default_factory=dict, hash=False)

    def check(self, current: str, new: str) -> None:
        """Refuse (409, naming from and to) a change the lifecycle does not allow."""
        if new != current and new not in self.allowed.get(current, ()):
            raise ForbiddenTransition(self.column, current, new, self.allowed.get(current, ()))


@dataclass(frozen=True)
class RowRule:
    """A rule between fields of one row (the database holds it as a CHECK too): checked on the
    row as it will be stored, so a violation is a 422 naming `column`, not a constraint."""

    column: str
    holds: Callable[[Mapping[str, Any]], bool]
    message: str


@dataclass(frozen=True)
class Children:
    """Rows of a child table given inside the parent's body (an order's items) and written
    with it, each carrying the parent's key in `parent_key`."""

    field: str
    product: str
    parent_key: str
    accepted: tuple[str, ...]
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    min_items: int = 1
    max_items: int = 1000


class WriteLogic:
    """A domain's own logic around the writes of one table; the default does nothing.

    Hooks read through `context` (never SQL of their own) and change the values in place;
    they raise a Problem (InvalidBody naming the field) to refuse."""

    async def before_create(
        self, context: WriteContext, row: dict[str, Any], children: list[dict[str, Any]]
    ) -> None:
        """Complete a new row (and its children) before it is inserted."""

    async def before_update(
        self, context: WriteContext, current: Mapping[str, Any], changes: dict[str, Any]
    ) -> None:
        """Complete the changes to an existing row before they are applied."""


class WriteContext:
    """What a hook may read: rows of the domain's tables by key, and the transaction's time.
    Implemented by shared.writing.store on the request's own transaction."""

    now: dt.datetime

    async def rows(
        self, product: str, keys: Sequence[Any], columns: Sequence[str]
    ) -> dict[Any, dict[str, Any]]:
        """The rows of a table product whose key is among `keys`, by key."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class TableWrites:
    """How one table product of a domain is written through its API.

    - `accepted`: the columns a POST (or PUT, or batch row) body gives; required unless
      nullable, defaulted, `filled` by the logic, or the status of `transitions` (which
      starts at `initial[0]`, given or not).
    - `updatable`: the columns a PATCH may change (none: no PATCH).
    - `create`: a POST creates rows; `upsert_key`: a PUT replaces the row with that natural
      key (its columns in the path, those in `upsert_query` in the query string).
    - Columns neither accepted nor set by logic take the database's defaults (the key,
      created_at, updated_at).
    - `deletable`: a DELETE removes a row by key (with its `children`); a row other rows
      still refer to is refused (409 naming the reference)."""

    product: str
    accepted: tuple[str, ...]
    updatable: tuple[str, ...] = ()
    create: bool = True
    upsert_key: tuple[str, ...] = ()
    upsert_query: tuple[str, ...] = ()
    batch: bool = True
    deletable: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)
    filled: tuple[str, ...] = ()  # accepted columns a body may omit: the logic fills them
    transitions: Transitions | None = None
    rules: tuple[RowRule, ...] = ()
    children: Children | None = None
    logic: WriteLogic = field(default_factory=WriteLogic, hash=False, compare=False)

    def check_row(self, row: Mapping[str, Any]) -> None:
        """Refuse a row that breaks a rule between its fields (422 naming each field)."""
        broken = [FieldError(r.column, r.message) for r in self.rules if not r.holds(row)]
        if broken:
            raise InvalidBody(broken)


def check_writes(domain: Domain) -> None:
    """Refuse write declarations that name what the domain does not declare."""
    for writes in domain.writes:
        product = domain.product(writes.product)
        where = f"Domain '{domain.name}' writes '{writes.product}'"
        if product is None or not product.is_table or len(product.key) != 1:
            raise ValueError(f"{where}: not a declared table product with a one-column key")
        stored = {c.name for c in product.stored_columns}
        named = {
            *writes.accepted,
            *writes.updatable,
            *writes.upsert_key,
            *writes.defaults,
            *writes.filled,
            *(r.column for r in writes.rules),
        }
        if writes.transitions:
            named |= {writes.transitions.column, *writes.transitions.stamps.values()}
        unknown = sorted(named - stored)
        if unknown:
            raise ValueError(f"{where}: columns {unknown} are not stored columns of it")
        if not set(writes.upsert_query) <= set(writes.upsert_key):
            raise ValueError(f"{where}: upsert_query names columns outside upsert_key")
        if not set(writes.upsert_key) <= set(writes.accepted):
            raise ValueError(f"{where}: every upsert_key column must be accepted")
        if writes.children:
            child = domain.product(writes.children.product)
            if child is None or not child.is_table:
                raise ValueError(f"{where}: child '{writes.children.product}' is not a table")
            child_named = {
                *writes.children.accepted,
                *writes.children.defaults,
                writes.children.parent_key,
            }
            missing = sorted(child_named - {c.name for c in child.stored_columns})
            if missing:
                raise ValueError(f"{where}: child columns {missing} are not declared")
