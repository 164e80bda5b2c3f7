"""The pathologist's prior: block review and the p(c|z) table."""
