"""The commands' jobs (denoise, train, evaluate, ingest, synth): each checks, plans, runs on Ray and reports."""
