"""The shared core every method builds on: data, masks, problem, runs, test protocol, reports (docs/design.md)."""
