"""The run harness every training loop shares: run folder, config, metrics and TensorBoard, samples,
atomic checkpoints and resume, optimizer and schedule, seeds, report.

Nothing is imported here so that `langrl.run.io` stays a leaf that `langrl.models` may use.
"""
