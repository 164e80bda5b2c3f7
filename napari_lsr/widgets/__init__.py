"""Dock widgets: thin Qt views over the Qt-free core; no computation lives here."""
