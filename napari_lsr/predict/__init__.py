"""Prediction: tiled whole-slide inference."""
