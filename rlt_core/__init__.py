"""rlt_core: the RLT library (paper: "Reinforcement Learning Teachers of Test Time Scaling").

Plain typed functions that a notebook or script can call directly; the Prefect layers
(`flows/`, `tasks/`) wire them. This package never imports Prefect.
"""

__version__ = "0.1.0"
