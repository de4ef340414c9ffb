"""Ablation studies of training recipes: run variants x seeds into one table (`run_ablation`), report it (`make_report`)."""

from imgcls.ablation.report import Report, VariantStats, make_report, paired_ci, variant_stats, welch_ci
from imgcls.ablation.run import (
                                 AblationResult,
                                 AblationSpec,
                                 InProcessRunner,
                                 SubprocessRunner,
                                 Variant,
                                 read_table,
                                 run_ablation,
                                 spec_from_dict,
)

__all__ = ["AblationResult", "AblationSpec", "InProcessRunner", "Report", "SubprocessRunner", "Variant", "VariantStats",
           "make_report", "paired_ci", "read_table", "run_ablation", "spec_from_dict", "variant_stats", "welch_ci"]
