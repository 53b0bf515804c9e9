"""Serving at scale: a Triton model repository, a local Triton server, and load tests against one."""
