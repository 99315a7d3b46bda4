"""What one trial does: tasks and data, model loading, the three phases, the Ray Train wrapper.

Only `trainables.three_phase` imports Ray; everything else is plain Python/PyTorch.
"""
