"""The procedural world: one seeded latent layout rendered into all five modalities."""
