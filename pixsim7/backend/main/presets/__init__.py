"""Generation presets: the schema clients send and read, the default presets a database is
seeded with, and the import job. The route plugin `routes/presets`, the `seed` startup step and
the job registry all use this package; it uses only the layers below it."""

from pixsim7.backend.main.presets.importing import (
    IMPORT_JOB,
    PresetImport,
    UnknownProvider,
    import_presets,
)
from pixsim7.backend.main.presets.schemas import MODEL_NAME, PresetCreate, PresetOut
from pixsim7.backend.main.presets.seed import DEFAULT_PRESETS, seed_default_presets

__all__ = [
    "DEFAULT_PRESETS", "IMPORT_JOB", "MODEL_NAME", "PresetCreate", "PresetImport", "PresetOut",
    "UnknownProvider", "import_presets", "seed_default_presets",
]
