"""access keys: IAM access key pairs for AWS Signature Version 4 (identity/access_keys.py)

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


# An access key belongs to a user (owner_kind "user", owner_id the user id), a client acting
# as a service account ("client", the client id) or a role session ("role", the role name,
# session details in ``session``; temporary ASIA keys with expires_at and the SHA-256 of
# their session token). The secret is wrapped by the key-encryption key: SigV4 verification
# needs it in clear for the HMAC, so a hash would not do.
def upgrade() -> None:
    op.create_table('access_keys',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('owner_kind', sa.String(length=16), nullable=False),
    sa.Column('owner_id', sa.String(length=128), nullable=False),
    sa.Column('secret', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('last_used_at', sa.Integer(), nullable=True),
    sa.Column('last_used_service', sa.String(length=64), nullable=True),
    sa.Column('last_used_region', sa.String(length=64), nullable=True),
    sa.Column('expires_at', sa.Integer(), nullable=True),
    sa.Column('session_token_hash', sa.String(length=64), nullable=True),
    sa.Column('session', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('access_keys', schema=None) as batch_op:
        batch_op.create_index('ix_access_keys_owner', ['owner_kind', 'owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_access_keys_expires_at'), ['expires_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('access_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_access_keys_expires_at'))
        batch_op.drop_index('ix_access_keys_owner')
    op.drop_table('access_keys')
