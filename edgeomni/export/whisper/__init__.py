"""Whisper model code for the speech task (tasks/speech.py): the CTranslate2 checkpoint read and mapped into
transformers, the ONNX encoder/decoder graphs and their INT8 pair, WER scoring, and the distilled student; the
audio it calibrates and scores on comes from edgeomni/datasets/. Export-time only (torch, transformers, onnx);
the runtime side is edgeomni/engines/whisper_asr.py.
"""
