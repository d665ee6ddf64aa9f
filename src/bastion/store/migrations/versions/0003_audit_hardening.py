"""audit hardening: signed, append-only archive rows

Revision ID: 0003
Revises: 0002

An ``audit_archives`` row lets retention delete the records it covers, so it must not be
forgeable: each row now carries the notary's Ed25519 signature over a statement of the
segment (``audit/archive.py``: first and last seq, start and end hash, end frontier, the
checkpoints it was checked against, the file's SHA-256). ``bastion audit verify`` trusts a
row only when that signature verifies (or, for a row written before this revision, when its
segment file verifies). Rows written before have NULL in the new columns.

Triggers (defence in depth; verify is what proves): ``audit_archives`` is append-only, a new
row must continue the last one and carry a signature, and a record may be deleted only when
an archive row covers its seq. A record may be inserted only after every record there is or
was (seq >= 1, above the newest row and above every archived range): a forged row below the
seqs verify walks would otherwise show in ``audit search`` (verify also reports such rows).
Both lookups are a primary-key index lookup (MAX of the key), not a scan.
"""
import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_COVERED = ("EXISTS (SELECT 1 FROM audit_archives WHERE audit_archives.last_seq >= OLD.seq "
            "AND audit_archives.first_seq <= OLD.seq)")
_NEXT = "(SELECT COALESCE(MAX(last_seq), 0) + 1 FROM audit_archives)"
_OLD_ARCHIVED = "(SELECT COALESCE(MAX(last_seq), 0) FROM audit_archives)"
_NOT_NEXT = ("NEW.seq < 1 OR NEW.seq <= (SELECT COALESCE(MAX(seq), 0) FROM audit_events) "
             "OR NEW.seq <= (SELECT COALESCE(MAX(last_seq), 0) FROM audit_archives)")


def upgrade() -> None:
    with op.batch_alter_table('audit_archives', schema=None) as batch_op:
        batch_op.add_column(sa.Column('start_prev', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('checkpoints', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('key_id', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('signature', sa.LargeBinary(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER audit_events_no_delete")
        op.execute("CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
                   f"WHEN NOT {_COVERED} "
                   "BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END")
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_archives_no_{verb.lower()} BEFORE {verb} ON "
                       "audit_archives "
                       "BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END")
        op.execute("CREATE TRIGGER audit_archives_insert BEFORE INSERT ON audit_archives "
                   f"WHEN NEW.first_seq != {_NEXT} OR NEW.last_seq < NEW.first_seq "
                   "OR NEW.signature IS NULL "
                   "BEGIN SELECT RAISE(ABORT, 'audit archives are append-only and signed'); "
                   "END")
        op.execute("CREATE TRIGGER audit_events_insert BEFORE INSERT ON audit_events "
                   f"WHEN {_NOT_NEXT} "
                   "BEGIN SELECT RAISE(ABORT, 'audit trail is append-only: a record goes "
                   "after the last one'); END")
        return
    op.execute(f"""
        CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
        BEGIN
          -- nested: OLD.seq exists only on audit_events (plpgsql does not short-circuit)
          IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_events' THEN
            IF {_COVERED} THEN
              RETURN OLD;
            END IF;
          END IF;
          RAISE EXCEPTION 'audit trail is append-only';
        END $$ LANGUAGE plpgsql""")
    op.execute(f"""
        CREATE FUNCTION audit_archive_insert() RETURNS trigger AS $$
        BEGIN
          IF NEW.first_seq != {_NEXT} OR NEW.last_seq < NEW.first_seq
             OR NEW.signature IS NULL THEN
            RAISE EXCEPTION 'audit archives are append-only and signed';
          END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql""")
    op.execute("CREATE TRIGGER audit_archives_append_only BEFORE UPDATE OR DELETE ON "
               "audit_archives FOR EACH ROW EXECUTE FUNCTION audit_append_only()")
    op.execute("CREATE TRIGGER audit_archives_no_truncate BEFORE TRUNCATE ON audit_archives "
               "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()")
    op.execute("CREATE TRIGGER audit_archives_insert BEFORE INSERT ON audit_archives "
               "FOR EACH ROW EXECUTE FUNCTION audit_archive_insert()")
    op.execute(f"""
        CREATE FUNCTION audit_event_insert() RETURNS trigger AS $$
        BEGIN
          IF {_NOT_NEXT} THEN
            RAISE EXCEPTION 'audit trail is append-only: a record goes after the last one';
          END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql""")
    op.execute("CREATE TRIGGER audit_events_insert BEFORE INSERT ON audit_events "
               "FOR EACH ROW EXECUTE FUNCTION audit_event_insert()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("audit_archives_no_update", "audit_archives_no_delete",
                     "audit_archives_insert", "audit_events_no_delete",
                     "audit_events_insert"):
            op.execute(f"DROP TRIGGER {name}")
        op.execute("CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
                   f"WHEN OLD.seq > {_OLD_ARCHIVED} "
                   "BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END")
    else:
        op.execute("DROP TRIGGER audit_archives_append_only ON audit_archives")
        op.execute("DROP TRIGGER audit_archives_no_truncate ON audit_archives")
        op.execute("DROP TRIGGER audit_archives_insert ON audit_archives")
        op.execute("DROP FUNCTION audit_archive_insert()")
        op.execute("DROP TRIGGER audit_events_insert ON audit_events")
        op.execute("DROP FUNCTION audit_event_insert()")
        op.execute(f"""
            CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
            BEGIN
              IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_events' THEN
                IF OLD.seq <= {_OLD_ARCHIVED} THEN
                  RETURN OLD;
                END IF;
              END IF;
              RAISE EXCEPTION 'audit trail is append-only';
            END $$ LANGUAGE plpgsql""")
    with op.batch_alter_table('audit_archives', schema=None) as batch_op:
        batch_op.drop_column('signature')
        batch_op.drop_column('key_id')
        batch_op.drop_column('checkpoints')
        batch_op.drop_column('start_prev')
