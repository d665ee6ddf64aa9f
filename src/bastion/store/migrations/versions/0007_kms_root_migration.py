"""kms root migration: key material wrapped by a second root keeper (kms_root_wrappings)

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('kms_root_wrappings',
    sa.Column('key_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('keeper', sa.String(length=16), nullable=False),
    sa.Column('material', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['kms_keys.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key_id', 'version', 'keeper')
    )


def downgrade() -> None:
    op.drop_table('kms_root_wrappings')
