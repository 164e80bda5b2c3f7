"""Learning from the prior: the U-Net, the losses, training blocks, the training loop, its health
watch, the run in a child process and the model registry."""
