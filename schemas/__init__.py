"""nairbus wire contract: message models, codecs and the topic tree. Knows nothing of torch."""
