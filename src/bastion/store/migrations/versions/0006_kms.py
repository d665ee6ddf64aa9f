"""kms: keys, key versions (material wrapped by the root keeper), aliases, tags, grants

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('kms_keys',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('spec', sa.String(length=32), nullable=False),
    sa.Column('usage', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('policy', sa.Text(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('deletion_at', sa.BigInteger(), nullable=True),
    sa.Column('pending_days', sa.Integer(), nullable=True),
    sa.Column('rotation_period', sa.Integer(), nullable=True),
    sa.Column('next_rotation_at', sa.BigInteger(), nullable=True),
    sa.Column('current_version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('kms_key_versions',
    sa.Column('key_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('keeper', sa.String(length=16), nullable=False),
    sa.Column('material', sa.LargeBinary(), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=True),
    sa.Column('rotation_type', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['kms_keys.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key_id', 'version')
    )
    op.create_table('kms_aliases',
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('key_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['kms_keys.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('kms_aliases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_kms_aliases_key_id'), ['key_id'], unique=False)
    op.create_table('kms_tags',
    sa.Column('key_id', sa.String(length=36), nullable=False),
    sa.Column('tag_key', sa.String(length=128), nullable=False),
    sa.Column('tag_value', sa.String(length=256), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['kms_keys.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key_id', 'tag_key')
    )
    op.create_table('kms_grants',
    sa.Column('grant_id', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=True),
    sa.Column('grantee', sa.String(length=256), nullable=False),
    sa.Column('retiring', sa.String(length=256), nullable=True),
    sa.Column('operations', sa.Text(), nullable=False),
    sa.Column('constraints', sa.Text(), nullable=True),
    sa.Column('issuer', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['kms_keys.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('grant_id')
    )
    with op.batch_alter_table('kms_grants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_kms_grants_key_id'), ['key_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('kms_grants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_kms_grants_key_id'))
    op.drop_table('kms_grants')
    op.drop_table('kms_tags')
    with op.batch_alter_table('kms_aliases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_kms_aliases_key_id'))
    op.drop_table('kms_aliases')
    op.drop_table('kms_key_versions')
    op.drop_table('kms_keys')
