"""The simulated market: a seeded price model, `markd synth`, and venue servers speaking real formats."""
