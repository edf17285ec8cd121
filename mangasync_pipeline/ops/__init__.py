"""Operating mangasync: status report, process launcher, `run` and `demo`."""
