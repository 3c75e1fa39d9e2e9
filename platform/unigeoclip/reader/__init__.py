"""The Ray Data training reader: the sample store as a stream of decoded, augmented batches."""
