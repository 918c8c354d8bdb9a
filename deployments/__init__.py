"""Prefect deployments of the flows (`prefect deployment run rlt/full-pipeline`)."""
