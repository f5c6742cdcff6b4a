"""Measuring tools: the benches and the evaluation of the models on real data."""
