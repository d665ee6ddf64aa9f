"""oauth identity and orders: orders owned by principal keys, not the bare token sub;
clients registered without an auth method accept either secret method (auth_method_pinned)

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    _orders_upgrade()
    _oauth_upgrade()


def downgrade() -> None:
    _oauth_downgrade()
    _orders_downgrade()


# --- orders: ownership by principal (orders/api.py owner_key) ---------------------------
# An order's owner was the token's bare ``sub``: every caller of a role session name shared
# one owner, and a client whose id equals a user id was that user. Owner keys are now the
# user id for users (rows stored so far by users stay valid: same key), the principal ARN
# for clients, and "<session arn>;act=<caller arn>" for role sessions: longer than 64.
# Rows whose owner is no user id were stored by a client or a role session under the
# ambiguous key; handing them to either would repeat the bug, so they become
# "legacy:<old owner>", which no caller's key can equal (an operator who knows whose they
# are may reassign them with one UPDATE).
def _orders_upgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.alter_column('owner', existing_type=sa.String(length=64),
                              type_=sa.String(length=1024), existing_nullable=False)
    op.execute("UPDATE orders SET owner = 'legacy:' || owner "
               "WHERE owner NOT IN (SELECT id FROM users)")


def _orders_downgrade() -> None:
    # back to 64 characters: legacy rows get their old owner back; rows of clients and
    # sessions keep a truncated key that no caller presents (unreadable, not misassigned)
    op.execute("UPDATE orders SET owner = substr(owner, 8) WHERE owner LIKE 'legacy:%'")
    op.execute("UPDATE orders SET owner = substr(owner, 1, 64) WHERE length(owner) > 64")
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.alter_column('owner', existing_type=sa.String(length=1024),
                              type_=sa.String(length=64), existing_nullable=False)


# --- oauth: clients (identity/clients.py, oauth/clientauth.py) ----------------------------
# A client registered without an explicit token_endpoint_auth_method accepts both secret
# methods (client_secret_basic and client_secret_post, as Keycloak does); an explicit method
# pins it. Rows registered so far cannot tell whether their method was chosen: they stay
# pinned (server default true), which is exactly their behaviour until now.
def _oauth_upgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auth_method_pinned', sa.Boolean(), nullable=False,
                                      server_default=sa.true()))


def _oauth_downgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('auth_method_pinned')
