"""Case tables for the IAM engine, one module per AWS documentation page (see ``tests/iam``)."""
