"""The export's steps, one module family each: `onnx_export` (source model -> FP32 ONNX), `quantize_*` (INT8:
`int8` the shared ONNX Runtime quantizer, `ragged` for variable-size inputs (PP-OCR), `whisper` the encoder /
decoder pair), `finetune` (quantization-aware fine-tuning), `gate_*` (INT8 against FP32: `accuracy` for output
metrics and sensitive nodes, `wer` for Whisper), `tensorrt_*` (`engine` builds one, `target` is the recipe's
`tensorrt` target for one model, `whisper` the encoder's). Tasks (../tasks/) compose them.
"""
