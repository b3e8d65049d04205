"""The engine: the precompiled log density of the model family and the sampler adapter.

Only this package imports the sampler (nutpie)."""
