"""Data sets: the prepared-data contract every stage after ``prepare`` reads (:mod:`.prepared`);
the ``prepare`` stage itself is :mod:`.prepare` (kept apart, so that reading prepared data does not
import, or depend on, the code that builds them).
"""

from gancore.data.prepared import (
    CLASSIFIER_FILE,
    DATA_FILE,
    META_FILE,
    PreparedData,
    load_meta,
    load_prepared,
    save_prepared,
    to_model_range,
    to_uint8,
)

__all__ = [
    "CLASSIFIER_FILE",
    "DATA_FILE",
    "META_FILE",
    "PreparedData",
    "load_meta",
    "load_prepared",
    "save_prepared",
    "to_model_range",
    "to_uint8",
]
