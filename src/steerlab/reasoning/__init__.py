"""Audit reasoning from latent states: traces captured while sampling, latent-trajectory and confidence
signals, selection among samples, sequential early selection and online early stopping."""

from .traces import SEGMENT, TOP_K, Trace, Tracer, sample

__all__ = ["SEGMENT", "TOP_K", "Trace", "Tracer", "sample"]
