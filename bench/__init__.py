"""`make bench`: throughput and latency of the real API against a hello-world baseline measured in the same run."""
