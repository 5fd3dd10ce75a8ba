"""The one interpreter of descriptions: limits and frames, compiled plans, the engine, spans."""
