"""From frames to results: preprocess, predictor (stream / run), postprocess (the official rules, streamed)."""
