"""The video path: change scores, incremental visual state, and the block analyser."""
