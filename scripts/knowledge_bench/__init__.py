"""The parts of `scripts/bench_knowledge.py`, one concern each.

`data` (SciFact files and judgments), `ingest_speed` (ingest against bare
encoding), `quality` (recall and MRR per mode, the fusion chosen on a
held-out split), `latency` (query latency at the set's size and scaled up,
exact and approximate), `peer` (ChromaDB on the same vectors),
`end_to_end` (missions with the real SmolLM2 through a real kernel).
"""
