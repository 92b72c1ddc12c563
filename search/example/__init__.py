"""The embedded example family (docs/example-family.md): a real small chat model, its DPO, KTO and
ORPO variants trained on the bundled preference set (`data/`), their behaviour checks and the
merge demo. Other code imports these names from here:

- `family.py`: the base converted from GGUF and the variants prepared and cached (`prepare_example`);
- `training.py`: one preference-optimised variant trained with TRL (and its trainer, built);
- `preferences.py`: the bundled preference set, loaded and validated;
- `behaviour.py`: what a variant's answers look like (terse, proactive, cautious);
- `demo.py`: every method merges the family once (`run_search.py demo`).
"""

from search.example.behaviour import MAX_NEW_TOKENS, Behaviour, profile_model
from search.example.demo import answer, example_plan, run_example
from search.example.family import (
    DEFAULT_DATA_DIR, FAMILY_FILE, HOMOGENEOUS_SEED, VARIANTS, convert_base, homogeneous_arg, homogeneous_name,
    homogeneous_settings, prepare_example, variant_settings,
)
from search.example.preferences import (
    DEFAULT_PREFERENCES, KINDS, SLANTS, STYLES, PreferenceSet, PreferenceSetError, kto_rows, load_preferences,
    paired_rows,
)
from search.example.training import (
    DEFAULT_SETTINGS, METADATA_FILE, METHODS, TrainingSettings, build_trainer, train_variant,
)

__all__ = [
    "DEFAULT_DATA_DIR", "DEFAULT_PREFERENCES", "DEFAULT_SETTINGS", "FAMILY_FILE", "HOMOGENEOUS_SEED", "KINDS",
    "MAX_NEW_TOKENS", "METADATA_FILE", "METHODS", "SLANTS", "STYLES", "VARIANTS", "Behaviour", "PreferenceSet",
    "PreferenceSetError", "TrainingSettings", "answer", "build_trainer", "convert_base", "example_plan",
    "homogeneous_arg", "homogeneous_name", "homogeneous_settings", "kto_rows", "load_preferences", "paired_rows",
    "prepare_example", "profile_model", "run_example", "train_variant", "variant_settings",
]
