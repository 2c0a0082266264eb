"""② A webhook body to durable, normalized messages, without HTTP: the provider parsers, the
sender checks, the raw archive in S3 (which owns the object key layout) and the Redis streams
(which own stream names, ids and ranges). Live traffic and archive replay use the same
parsers."""
