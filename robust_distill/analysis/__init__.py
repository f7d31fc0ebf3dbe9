"""Analyses of trained models (the logit-distribution study of Seguin et al.)."""
