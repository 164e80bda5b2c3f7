"""The sample data: the procedural H&E renderer and the sample project writer."""
