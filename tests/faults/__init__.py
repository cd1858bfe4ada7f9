"""Fault tests: kill -9 a part of the running system under load and prove nothing is lost."""
