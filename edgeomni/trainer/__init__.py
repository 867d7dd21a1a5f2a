"""The cloud trainer (the `trainer` extra: pyarrow, paho-mqtt): ingest, fleet report, calibration/distillation sets."""
