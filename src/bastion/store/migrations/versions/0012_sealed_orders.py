"""orders: sensitive fields sealed with envelope encryption (orders.sealed)

Rows stored before this migration keep their clear ``item`` and are sealed the first time
their owner reads them (bastion.orders.api); new rows leave ``item`` empty.

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sealed', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_column('sealed')
