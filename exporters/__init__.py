"""Model export: Hugging Face checkpoints and the offline default model -> mel model folders."""
