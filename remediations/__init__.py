"""Remediation types: each module holds one remediation class and its config model beside it."""
