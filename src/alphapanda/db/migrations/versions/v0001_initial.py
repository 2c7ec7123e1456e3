"""Instruments, the streaming set, and access tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# One channel for every schema; the payload names the schema whose streaming set
# changed, so several deployments (or test runs) can share a database.
NOTIFY_CHANNEL = "alphapanda_registry"


def upgrade() -> None:
    op.create_table(
        "instruments",
        sa.Column("instrument_token", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("exchange_token", sa.BigInteger, nullable=False),
        sa.Column("tradingsymbol", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("last_price", sa.Float, nullable=False, server_default="0"),
        sa.Column("expiry", sa.Date, nullable=True),
        sa.Column("strike", sa.Float, nullable=False, server_default="0"),
        sa.Column("tick_size", sa.Float, nullable=False),
        sa.Column("lot_size", sa.Integer, nullable=False),
        sa.Column("instrument_type", sa.Text, nullable=False),
        sa.Column("segment", sa.Text, nullable=False),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("ix_instruments_exchange_symbol", "instruments", ["exchange", "tradingsymbol"])
    op.create_table(
        "stream_subscriptions",
        sa.Column(
            "instrument_token",
            sa.BigInteger,
            sa.ForeignKey("instruments.instrument_token", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("mode IN ('ltp', 'quote', 'full')", name="ck_stream_mode"),
    )
    op.create_table(
        "access_tokens",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("api_key", sa.Text, nullable=False),
        sa.Column("access_token", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_access_tokens_key_created", "access_tokens", ["api_key", "created_at"])
    # Statement-level: one notification per change, however many rows it touched;
    # PostgreSQL delivers it on commit and folds duplicates within a transaction.
    op.execute(
        f"""
        CREATE FUNCTION notify_stream_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{NOTIFY_CHANNEL}', TG_TABLE_SCHEMA);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER stream_subscriptions_changed
        AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON stream_subscriptions
        FOR EACH STATEMENT EXECUTE FUNCTION notify_stream_change()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS stream_subscriptions_changed ON stream_subscriptions")
    op.execute("DROP FUNCTION IF EXISTS notify_stream_change()")
    op.drop_table("access_tokens")
    op.drop_table("stream_subscriptions")
    op.drop_table("instruments")
