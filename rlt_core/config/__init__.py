"""Typed, frozen configs of every RLT stage, loaded from YAML profiles and validated at once.

    from rlt_core.config import load_config, config_digest
    cfg = load_config("paper-7b", ["reward.lambda=0"])   # Table 9 ablation
    cfg.teacher_rl.num_generations                         # 64 (Table 3)
    config_digest(cfg.teacher_rl)                          # sha256 for cache keys

CLI: `python -m rlt_core.config show paper-7b --set teacher_rl.batch_size=512`,
`python -m rlt_core.config validate tiny`.
"""

from rlt_core.config.data import DataConfig
from rlt_core.config.errors import ConfigError, ConfigIssue
from rlt_core.config.grpo import StudentRLConfig, TeacherRLConfig
from rlt_core.config.loader import available_profiles, config_dir, load_config
from rlt_core.config.resources import StageResources
from rlt_core.config.reward import RewardConfig
from rlt_core.config.sampling import (
    EvaluateConfig,
    GenerateTracesConfig,
    RefineTracesConfig,
    TeacherEvalConfig,
)
from rlt_core.config.schema import (
    PAPER_STUDENT_RL,
    PAPER_STUDENT_SFT,
    ExperimentsConfig,
    PipelineConfig,
)
from rlt_core.config.serialize import (
    Reference,
    TokenizerReference,
    config_digest,
    key_dict,
    to_dict,
    to_yaml,
)
from rlt_core.config.sft import StudentSFTConfig, TeacherSFTConfig

__all__ = [
    "PAPER_STUDENT_RL",
    "PAPER_STUDENT_SFT",
    "ConfigError",
    "ConfigIssue",
    "DataConfig",
    "EvaluateConfig",
    "ExperimentsConfig",
    "GenerateTracesConfig",
    "TeacherEvalConfig",
    "PipelineConfig",
    "RefineTracesConfig",
    "RewardConfig",
    "StageResources",
    "StudentRLConfig",
    "StudentSFTConfig",
    "TeacherRLConfig",
    "TeacherSFTConfig",
    "available_profiles",
    "config_dir",
    "config_digest",
    "load_config",
    "to_dict",
    "key_dict",
    "Reference",
    "TokenizerReference",
    "to_yaml",
]
