"""Prefect tasks: one thin task per stage, each calling one rlt_core entry point."""
