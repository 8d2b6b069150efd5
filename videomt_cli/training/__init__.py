"""Training and data for it: data (clips from YouTube-VIS datasets), losses, optim, loop, synth."""
