"""internal CA: authorities, certificates and revocations

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pki_authorities',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.String(length=32), nullable=True),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('certificate', sa.Text(), nullable=False),
    sa.Column('not_before', sa.BigInteger(), nullable=False),
    sa.Column('not_after', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('crl_number', sa.BigInteger(), nullable=False),
    sa.Column('base_url', sa.String(length=2048), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'generation', name='uq_pki_authorities_kind_generation')
    )
    op.create_table('pki_certificates',
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('ca_id', sa.String(length=32), nullable=False),
    sa.Column('profile', sa.String(length=16), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('names', sa.Text(), nullable=False),
    sa.Column('spiffe_id', sa.String(length=2048), nullable=True),
    sa.Column('not_before', sa.BigInteger(), nullable=False),
    sa.Column('not_after', sa.BigInteger(), nullable=False),
    sa.Column('certificate', sa.Text(), nullable=False),
    sa.Column('requester', sa.String(length=512), nullable=False),
    sa.Column('revoked_at', sa.BigInteger(), nullable=True),
    sa.Column('revocation_reason', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('serial')
    )
    with op.batch_alter_table('pki_certificates', schema=None) as batch_op:
        batch_op.create_index('ix_pki_certificates_ca_revoked', ['ca_id', 'revoked_at'],
                              unique=False)
        batch_op.create_index('ix_pki_certificates_not_after', ['not_after'], unique=False)


def downgrade() -> None:
    op.drop_table('pki_certificates')
    op.drop_table('pki_authorities')
