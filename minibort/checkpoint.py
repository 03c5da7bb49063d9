# Placeholder: the checkpoint readers are being written (issue 3).
class CheckpointError(ValueError):
    pass
