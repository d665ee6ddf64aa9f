"""Tamper-evident audit trail: CloudTrail-shaped records, hash chain, RFC 9162 Merkle tree,
signed checkpoints."""
