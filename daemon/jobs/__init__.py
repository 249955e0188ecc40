"""Scheduled work: the `jobs:` section runs an action (any remediation type) on a cron
schedule, records every run and reports it as an observation rules can use."""
