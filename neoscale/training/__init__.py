"""Training: hyper-parameters, optimizer, sharded train state and step, checkpoints, the loop."""
