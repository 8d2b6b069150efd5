"""The network and what names and loads it: config, model, checkpoint, registry, labels, device."""
