"""One canonical preprocessing: what the reader, the embedding job, the evaluation and the service feed a model."""
