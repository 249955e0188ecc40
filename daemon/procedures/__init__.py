"""Procedures: the runbook's step lists, run on request (config, runner, records)."""
