"""private links: random per-subscriber tokens, ids never reused, a signup queue, webhook receipts

Every subscriber gets a random `token` (what links carry from now on) and keeps its row id
as `legacy_id`, so links in messages sent before this migration keep working; new rows
never get a legacy id. On SQLite the subscribers table is rebuilt with AUTOINCREMENT and
its sequence starts above every id ever seen (erased people's ids live on in events).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    if sqlite:
        _save_children(bind)

    op.add_column("subscribers", sa.Column("token", sa.String(length=20), nullable=True))
    op.add_column("subscribers", sa.Column("legacy_id", sa.Integer(), nullable=True))
    ids = [row[0] for row in bind.execute(sa.text("SELECT id FROM subscribers"))]
    if ids:
        bind.execute(
            sa.text("UPDATE subscribers SET token = :token, legacy_id = id WHERE id = :id"),
            [{"id": id_, "token": secrets.token_hex(10)} for id_ in ids],
        )
    with op.batch_alter_table(
        "subscribers", recreate="always" if sqlite else "auto", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.alter_column("token", existing_type=sa.String(length=20), nullable=False)
        batch_op.create_unique_constraint("uq_subscribers_token", ["token"])
        batch_op.create_unique_constraint("uq_subscribers_legacy_id", ["legacy_id"])

    if sqlite:
        _restore_children(bind)
        highest = bind.execute(
            sa.text(
                "SELECT max(m) FROM (SELECT max(id) AS m FROM subscribers "
                "UNION ALL SELECT max(subscriber_id) FROM events "
                "UNION ALL SELECT max(subscriber_id) FROM deliveries)"
            )
        ).scalar()
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'subscribers'"))
        bind.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('subscribers', :seq)"), {"seq": highest or 0}
        )

    op.create_table(
        "signups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("email_key", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("consent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consent_source", sa.String(length=200), nullable=False),
        sa.Column("consent_ip", sa.String(length=64), nullable=False),
        sa.Column("consent_text", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("nonce_hash", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("nonce_hash"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_signups_email_key", "signups", ["email_key"])
    op.create_index("ix_signups_state", "signups", ["state"])
    op.create_table(
        "webhook_receipts",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index("ix_webhook_receipts_expires_at", "webhook_receipts", ["expires_at"])


def _save_children(bind) -> None:
    """Rebuilding `subscribers` drops the old table; with foreign keys on, SQLite would
    cascade that to tags and null the deliveries' links. Keep copies to put back."""
    bind.execute(sa.text("CREATE TEMP TABLE saved_tags AS SELECT subscriber_id, tag FROM subscriber_tags"))
    bind.execute(
        sa.text(
            "CREATE TEMP TABLE saved_links AS SELECT id, subscriber_id FROM deliveries WHERE subscriber_id IS NOT NULL"
        )
    )


def _restore_children(bind) -> None:
    bind.execute(
        sa.text("INSERT OR IGNORE INTO subscriber_tags (subscriber_id, tag) SELECT subscriber_id, tag FROM saved_tags")
    )
    bind.execute(
        sa.text(
            "UPDATE deliveries SET subscriber_id = "
            "(SELECT s.subscriber_id FROM saved_links s WHERE s.id = deliveries.id) "
            "WHERE id IN (SELECT id FROM saved_links)"
        )
    )
    bind.execute(sa.text("DROP TABLE saved_tags"))
    bind.execute(sa.text("DROP TABLE saved_links"))


def downgrade() -> None:
    op.drop_index("ix_webhook_receipts_expires_at", table_name="webhook_receipts")
    op.drop_table("webhook_receipts")
    op.drop_index("ix_signups_state", table_name="signups")
    op.drop_index("ix_signups_email_key", table_name="signups")
    op.drop_table("signups")
    with op.batch_alter_table("subscribers") as batch_op:
        batch_op.drop_constraint("uq_subscribers_legacy_id", type_="unique")
        batch_op.drop_constraint("uq_subscribers_token", type_="unique")
        batch_op.drop_column("legacy_id")
        batch_op.drop_column("token")
