"""The contract between `edgeomni trainer build-sets` and `edgeomni export`'s `trainer:DIR` sources: the
manifest format strings and where each set lives under DIR. Kept free of imports so that the export side
can read it without the trainer's pyarrow and the trainer never pulls in the export's torch."""

AUDIO_SET_FORMAT = "edgeomni-audio-set/1"
IMAGE_SET_FORMAT = "edgeomni-image-set/1"
_SUBFOLDER = {AUDIO_SET_FORMAT: "{purpose}", IMAGE_SET_FORMAT: "images/{purpose}"}


def set_subfolder(fmt: str, purpose: str) -> str:
    """DIR-relative folder of one set: `calibration` for audio, `images/calibration` for frames."""
    return _SUBFOLDER[fmt].format(purpose=purpose)
