"""Validation: the per-tick rules that turn a market's candidate into its mark.

    tiers.py      tier hysteresis: which tier is in use, and when a higher one recovers
    detectors.py  the anchor (time-weighted mean) and the divergence and confirmation rules
    guard.py      the jump guard and its dispute window
    stage.py      DisputeStage: the rules in order for one market and tick, the publish cadence, and
                  the disputes its detectors open (their records: disputes/)
    state.py      every market's state of those rules as numpy columns, and the quiet path that
                  advances the markets to which nothing happens in a few array steps

The daemon and the replay call the same stage (oracle.pipeline); disputes/ keeps the dispute
records, their store, API and webhook.
"""
