"""The slices of jetflow (tasks, render, deployments, …), each declared in a module of its own.

``slices.catalogue`` lists them; ``slices.slice`` says what a slice declares.
"""
