"""Data sets the benchmarks and the export stage share: the speech set, generated slides, real photo pools,
calibration and held-out audio and image sets, and audio files decoded as the speech models see them. Both
import this package and it imports neither.

Nothing here is on the runtime path; Pillow and scikit-image are imported inside the functions that draw.
"""
