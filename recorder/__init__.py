"""The results layer: results files, their tables, checkpoints, and the recorder that writes a round."""
