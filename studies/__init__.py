"""Study specs and the runner that sweeps them (built on ``tvconv``); see docs/ARCHITECTURE.md."""
