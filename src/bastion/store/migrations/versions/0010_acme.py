"""ACME accounts, orders, authorizations and challenges

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('acme_accounts',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('thumbprint', sa.String(length=64), nullable=False),
    sa.Column('jwk', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('contact', sa.Text(), nullable=False),
    sa.Column('eab_kid', sa.String(length=64), nullable=True),
    sa.Column('policy', sa.Text(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('acme_accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_acme_accounts_thumbprint'), ['thumbprint'],
                              unique=True)
    op.create_table('acme_orders',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('account_id', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('acme_orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_acme_orders_account_id'), ['account_id'],
                              unique=False)
    op.create_table('acme_authzs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('account_id', sa.String(length=32), nullable=False),
    sa.Column('order_id', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('acme_authzs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_acme_authzs_order_id'), ['order_id'],
                              unique=False)
    op.create_table('acme_certificates',
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=32), nullable=False),
    sa.Column('order_id', sa.String(length=32), nullable=False),
    sa.Column('cert_id', sa.String(length=255), nullable=False),
    sa.Column('chain', sa.Text(), nullable=False),
    sa.Column('not_before', sa.BigInteger(), nullable=False),
    sa.Column('not_after', sa.BigInteger(), nullable=False),
    sa.Column('revoked_at', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('serial')
    )
    with op.batch_alter_table('acme_certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_acme_certificates_cert_id'), ['cert_id'],
                              unique=False)
    op.create_table('acme_eab_keys',
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('mac_key', sa.LargeBinary(), nullable=False),
    sa.Column('policy', sa.Text(), nullable=True),
    sa.Column('account_id', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('kid')
    )


def downgrade() -> None:
    op.drop_table('acme_eab_keys')
    with op.batch_alter_table('acme_certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_acme_certificates_cert_id'))
    op.drop_table('acme_certificates')
    with op.batch_alter_table('acme_authzs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_acme_authzs_order_id'))
    op.drop_table('acme_authzs')
    with op.batch_alter_table('acme_orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_acme_orders_account_id'))
    op.drop_table('acme_orders')
    with op.batch_alter_table('acme_accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_acme_accounts_thumbprint'))
    op.drop_table('acme_accounts')
