"""What is searched: the data axes, the hyperparameters and the presets, as plain data."""
