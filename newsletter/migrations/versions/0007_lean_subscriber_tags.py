"""lean subscriber tags: no per-row foreign-key check; on SQLite, one b-tree per tag row

An import writes about two tag rows per subscriber. The foreign key from subscriber_tags
to subscribers checked every one of them: a trigger and a primary-key lookup per row on
PostgreSQL (it doubled the cost of writing tags), a lookup per row on SQLite. Tag rows are
only written for a subscriber in the same transaction, and are deleted with their
subscriber by the ORM's delete-orphan cascade (models.Subscriber.tag_rows, used by
`forget`), so the constraint guarded nothing the code does not; it goes.

On SQLite the table also becomes WITHOUT ROWID: the primary key (subscriber_id, tag) is
the table itself, instead of a rowid table plus a primary-key index.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

FOREIGN_KEY = "subscriber_tags_subscriber_id_fkey"  # PostgreSQL's name for 0001's constraint


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _rebuild_sqlite(bind, "PRIMARY KEY (subscriber_id, tag)) WITHOUT ROWID")
        return
    for foreign_key in sa.inspect(bind).get_foreign_keys("subscriber_tags"):
        op.drop_constraint(foreign_key["name"], "subscriber_tags", type_="foreignkey")


def downgrade() -> None:
    bind = op.get_bind()
    # Rows whose subscriber is gone could not exist under the constraint.
    bind.execute(sa.text("DELETE FROM subscriber_tags WHERE subscriber_id NOT IN (SELECT id FROM subscribers)"))
    if bind.dialect.name == "sqlite":
        _rebuild_sqlite(
            bind,
            "PRIMARY KEY (subscriber_id, tag), "
            "FOREIGN KEY(subscriber_id) REFERENCES subscribers (id) ON DELETE CASCADE)",
        )
        return
    op.create_foreign_key(FOREIGN_KEY, "subscriber_tags", "subscribers", ["subscriber_id"], ["id"], ondelete="CASCADE")


def _rebuild_sqlite(bind, rest: str) -> None:
    """SQLite cannot drop a foreign key or change a table's storage: copy into a new table.

    Nothing references subscriber_tags, so dropping the old table cascades nowhere."""
    bind.execute(
        sa.text("CREATE TABLE subscriber_tags_new (subscriber_id INTEGER NOT NULL, tag VARCHAR(100) NOT NULL, " + rest)
    )
    bind.execute(
        sa.text("INSERT INTO subscriber_tags_new (subscriber_id, tag) SELECT subscriber_id, tag FROM subscriber_tags")
    )
    bind.execute(sa.text("DROP TABLE subscriber_tags"))
    bind.execute(sa.text("ALTER TABLE subscriber_tags_new RENAME TO subscriber_tags"))
    bind.execute(sa.text("CREATE INDEX ix_subscriber_tags_tag ON subscriber_tags (tag)"))
