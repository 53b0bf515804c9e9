"""Throughput and latency across backends: plan (suites), sweep, measurement log and resume, reports."""
