"""The audit tamper tests' shared trail: records 1..60, the checkpoint at 40 stored by the
notary (the ``signed`` fixture of ``tests/audit/test_tamper.py``)."""

from tests.audit.test_tamper import signed  # noqa: F401
