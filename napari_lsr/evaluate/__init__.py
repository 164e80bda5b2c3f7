"""Evaluation: the band mask and masked scores, evaluation defined once."""
