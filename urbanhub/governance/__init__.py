"""Governance on the data path: policy decisions, consent, retention and the audit trail."""
